"""What a kubelet and the cluster DNS give a pod, on one machine: downward-API fields, `$(VAR)` expansion of
command and args, and rank 0's DNS name of a multi-pod trainer resolved to this machine.

- `$(VAR)` in a container's command and args expands to the value of the container's env var VAR; `$$` is
  a literal `$`; a reference to an undefined var stays as written [core/v1 Container, "command"/"args";
  Kubernetes docs "Define Dependent Environment Variables"].
- fieldRef `metadata.annotations['KEY']` / `metadata.labels['KEY']` [downward API] (the Job controller's
  JOB_COMPLETION_INDEX is one).
- Every pod here is 127.0.0.1: a torchrun `--rdzv-endpoint=HOST:PORT` (HOST being `<job>-0.<service>`,
  which only the cluster's DNS resolves through the headless Service) becomes `127.0.0.1:<port>`, one free
  local port per distinct endpoint, so that two jobs running at once do not share a rendezvous.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

from finetune_operator.local.semantics import JsonDict

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_KEYED = re.compile(r"^metadata\.(annotations|labels)\['([^']+)'\]$")
RDZV_FLAGS = ("--rdzv-endpoint=", "--rdzv_endpoint=")
RDZV_CONF_FLAGS = ("--rdzv-conf=", "--rdzv_conf=")
LOCAL_HOST = "127.0.0.1"


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, text)


def field_value(pod: JsonDict, path: str) -> str | None:
    """A downward-API fieldRef value of the pod (None when the field is not set)."""
    meta = pod.get("metadata") or {}
    keyed = _KEYED.match(path)
    if keyed:
        value = (meta.get(keyed.group(1)) or {}).get(keyed.group(2))
        return None if value is None else str(value)
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": LOCAL_HOST,
        "status.hostIP": LOCAL_HOST,
    }.get(path)
    return None if simple is None else str(simple)


def _script_index(args: list[str]) -> int:
    """Where torchrun's own options end: at `-m` or the first argument that is not an option."""
    for i, arg in enumerate(args):
        if arg in ("-m", "--module") or not arg.startswith("-"):
            return i
    return len(args)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


class LocalRendezvous:
    """Endpoints of torchrun rendezvous, mapped to local ports (stable for the executor's lifetime)."""

    def __init__(self) -> None:
        self._ports: dict[str, int] = {}

    def rewrite(self, args: list[str], hostname: str | None = None) -> list[str]:
        """The args with the rendezvous endpoint on this machine. In a cluster only the pod whose name the
        endpoint's host is (`<hostname>.<subdomain>`) hosts the c10d store (torchrun compares the host
        with its own names); here every pod is 127.0.0.1, so that choice is passed as `is_host`."""
        out: list[str] = []
        host: bool | None = None
        for arg in args:
            if arg.startswith(RDZV_FLAGS):
                flag, endpoint = arg.split("=", 1)
                port = self._ports.setdefault(endpoint, _free_port())
                out.append(f"{flag}={LOCAL_HOST}:{port}")
                host = bool(hostname) and endpoint.split(":", 1)[0].split(".", 1)[0] == hostname
            else:
                out.append(arg)
        if host is None:
            return out
        conf = f"is_host={'true' if host else 'false'}"
        for i, arg in enumerate(out):
            if arg.startswith(RDZV_CONF_FLAGS):
                out[i] = f"{arg},{conf}"
                return out
        return [*out[: _script_index(out)], f"--rdzv-conf={conf}", *out[_script_index(out) :]]


POD_MARKER_ENV = "FINETUNE_LOCAL_POD_UID"  # in every process of a local pod (the stand-in for its cgroup)


def kill_pod_processes(pod_uid: str) -> int:
    """SIGKILL every process still carrying the pod's marker (a container runtime kills the whole container
    when its main process ends or is killed: torchrun's workers run in sessions of their own, and would
    outlive it here). Linux /proc only; elsewhere nothing. Returns how many were killed."""
    import os
    import signal
    from pathlib import Path

    proc = Path("/proc")
    if not proc.is_dir() or not pod_uid:
        return 0
    marker = f"{POD_MARKER_ENV}={pod_uid}".encode()
    killed = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):
            continue
    return killed
