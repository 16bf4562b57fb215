"""A local "kubelet" for `finetune local`: runs the emulator's trainer pods as local processes.

For each pending pod it resolves the container's env (values, secretKeyRef, configMapKeyRef, fieldRef) and
volumes (ConfigMap and Secret volumes -> files, PVCs -> WORKDIR/pvc/<claim>, projected service-account
tokens -> a token file, emptyDirs -> temp dirs), maps the container's mount paths to those host
directories (in the args, the env and the trainer's config file), runs `python -m finetune_trainer`, and
writes the pod status back like a kubelet: Running, then Succeeded/Failed with the container's terminated
state (exit code and the termination message file as `message`). It binds the pods it runs to its node
(:data:`NODE_NAME`), as a one-node cluster's scheduler would. A graceful delete (``deletionTimestamp`` set)
sends SIGTERM and SIGKILL after ``deletionGracePeriodSeconds``; the pod is then written terminal (phase and
exit code) and deleted with ``gracePeriodSeconds: 0``, as a kubelet does. A forced delete only kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_operator.api.trainerconfig import OUTPUT_MOUNT, PVC_MOUNT
from finetune_operator.local.emulator import Emulator
from finetune_operator.local.kubelet import bind_to_node, stopped_status
from finetune_operator.local.podinputs import PodInputs, PodSetupError, rewrite
from finetune_operator.local.podnet import POD_MARKER_ENV, LocalRendezvous, expand_vars, kill_pod_processes
from finetune_operator.local.pods import is_terminal, set_condition
from finetune_operator.local.semantics import ApiError, JsonDict, Selector, now_rfc3339

logger = logging.getLogger(__name__)

TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE = 4096  # the kubelet's limit of a termination message
DEFAULT_ENTRYPOINT = ["python", "-m", "finetune_trainer"]
NODE_NAME = "localhost"  # the node this executor is the kubelet of


@dataclass
class _Running:
    pod: JsonDict
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    deleted: bool = False  # terminating: deletionTimestamp set (or already removed)
    gone: bool = False  # removed from the API (a forced delete): nothing left to report to
    grace: float = 30.0
    stopper: asyncio.Task[None] | None = None
    root: Path = field(default_factory=Path)


class LocalExecutor:
    """Runs pods of an Emulator as local processes until stopped."""

    def __init__(
        self,
        emu: Emulator,
        workdir: Path,
        *,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.emu = emu
        self.workdir = workdir.resolve()
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.token = token or secrets.token_hex(16)
        self.inputs = PodInputs(emu, self.workdir, self.extra_env, self.token)
        self.rendezvous = LocalRendezvous()  # torchrun endpoints of multi-pod trainers -> local ports
        self._pods: dict[str, _Running] = {}  # pod uid -> run
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        rdef = self.emu.store.resolve("", "v1", "pods")
        self._watcher = self.emu.store.watch(rdef, Selector(), None)
        self._task = asyncio.create_task(self._run(), name="local-executor")

    async def stop(self) -> None:
        if self._watcher is not None:
            self.emu.store.unwatch(self._watcher)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for run in list(self._pods.values()):
            await self._terminate(run, grace=5.0)
            if run.task is not None:
                run.task.cancel()
                with contextlib.suppress(BaseException):
                    await run.task
        self._pods.clear()

    async def __aenter__(self) -> LocalExecutor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            event = await self._watcher.queue.get()
            if event is None:
                return
            pod = event["object"]
            meta = pod["metadata"]
            uid = str(meta.get("uid"))
            run = self._pods.get(uid)
            if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
                # a graceful delete: SIGTERM now, SIGKILL after deletionGracePeriodSeconds (the kubelet's
                # way); the terminal status and the final delete follow once the process is gone
                if run is not None and not run.deleted:
                    run.deleted = True
                    run.grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                    if run.proc is not None:
                        run.stopper = asyncio.create_task(self._terminate(run, run.grace))
                if run is not None and event["type"] == "DELETED":
                    run.gone = True
                elif (
                    event["type"] != "DELETED"
                    and (pod.get("spec") or {}).get("nodeName") == NODE_NAME
                    and (run is None or (run.proc is None and run.task is not None and run.task.done()))
                ):
                    await self._stop_unstarted(pod)  # no process (never started): terminal at once
                continue
            phase = (pod.get("status") or {}).get("phase", "Pending")
            node = (pod.get("spec") or {}).get("nodeName")
            if run is None and phase == "Pending" and node in (None, "", NODE_NAME):
                if not node and not self._bind(pod):
                    continue
                run = _Running(pod=pod)
                self._pods[uid] = run
                run.task = asyncio.create_task(self._run_pod(run), name=f"pod-{meta['name']}")

    def _bind(self, pod: JsonDict) -> bool:
        """Bind the pod to this node (this one-node cluster's scheduler); False if it cannot be."""
        meta = pod["metadata"]
        try:
            bind_to_node(self.emu, meta, NODE_NAME)
        except ApiError as exc:
            logger.info("pod %s not bound: %s", meta["name"], exc.message)
            return False
        return True

    async def _stop_unstarted(self, pod: JsonDict) -> None:
        current = self.emu.store.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is None or current["metadata"].get("uid") != pod["metadata"].get("uid"):
            return
        if not is_terminal(current):
            await self._status(current, stopped_status(current))
        if current["metadata"].get("deletionGracePeriodSeconds"):
            self._confirm_deletion(current)

    def _confirm_deletion(self, pod: JsonDict) -> None:
        """The kubelet's last word on a terminating pod: delete it with gracePeriodSeconds 0."""
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.emu.execute(
                "DELETE",
                self.emu.store.resolve("", "v1", "pods"),
                meta["namespace"],
                meta["name"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta.get("uid")}},
            )

    # --- one pod ---------------------------------------------------------------------------------

    async def _status(self, pod: JsonDict, status: JsonDict) -> None:
        """Merge ``status`` into the pod's; conditions by type, so that those others own stay (the
        scheduler's PodScheduled, the eviction's DisruptionTarget), as a kubelet's status update does."""
        meta = pod["metadata"]
        current = self.emu.store.get("pods", meta["namespace"], meta["name"])
        if current is None or current["metadata"].get("uid") != meta.get("uid"):
            return
        if "conditions" in status:
            merged: JsonDict = {"conditions": list((current.get("status") or {}).get("conditions") or [])}
            for cond in status["conditions"]:
                set_condition(merged, cond)
            status = {**status, "conditions": merged["conditions"]}
        with contextlib.suppress(ApiError):
            await self.emu.patch(
                "pods", meta["namespace"], meta["name"], {"status": status}, subresource="status"
            )

    def _prepare(self, run: _Running) -> tuple[list[str], dict[str, str], Path]:
        pod = run.pod
        ns = pod["metadata"]["namespace"]
        spec = pod.get("spec") or {}
        container = (spec.get("containers") or [{}])[0]
        root = self.workdir / "pods" / ns / pod["metadata"]["name"]
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        run.root = root
        volumes = {vol["name"]: self.inputs.volume(ns, vol, root) for vol in spec.get("volumes") or []}
        mapping: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            host = volumes.get(mount["name"])
            if host is None:
                raise PodSetupError(f"volume {mount['name']!r} not found")
            if mount.get("subPath"):
                host = host / mount["subPath"]
            mapping[mount["mountPath"].rstrip("/") or "/"] = str(host)
        term_log = root / "termination-log"
        mapping[container.get("terminationMessagePath") or TERMINATION_LOG] = str(term_log)
        command = list(container.get("command") or DEFAULT_ENTRYPOINT)
        if command[0] in ("python", "python3"):
            command[0] = self.python
        args = [str(a) for a in rewrite(list(container.get("args") or []), mapping)]
        if "--config" in args:  # the trainer's config names container paths too: give it a mapped copy
            index = args.index("--config") + 1
            config = json.loads(Path(args[index]).read_text(encoding="utf-8"))
            mapped = root / "config.json"
            mapped.write_text(json.dumps(rewrite(config, mapping), indent=2), encoding="utf-8")
            args[index] = str(mapped)
        env = self.inputs.env(pod, container, mapping)
        # $(VAR) in command and args (e.g. torchrun's --node-rank=$(JOB_COMPLETION_INDEX)); rank 0's DNS name
        declared = {e["name"]: env[e["name"]] for e in container.get("env") or [] if e["name"] in env}
        command = [expand_vars(str(c), declared) for c in command]
        args = self.rendezvous.rewrite([expand_vars(a, declared) for a in args], spec.get("hostname"))
        env["FINETUNE_TERMINATION_LOG"] = str(term_log)
        env[POD_MARKER_ENV] = str(pod["metadata"].get("uid", ""))
        # Locations the config names only as URIs (adapter.continueFrom: pvc://...) are resolved by the
        # trainer at run time; tell it where each mount path lives on this machine.
        # Only PVC mounts: the config itself is already rewritten, and a prefix such as /tmp could match
        # a host path a second time.
        env["FINETUNE_PATH_MAP"] = ",".join(
            f"{mount}={host}"
            for mount, host in sorted(mapping.items())
            if mount.startswith((PVC_MOUNT + "/", OUTPUT_MOUNT))
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        return [*command, *args], env, term_log

    async def _run_pod(self, run: _Running) -> None:
        pod = run.pod
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        cname = container.get("name", "main")
        try:
            argv, env, term_log = self._prepare(run)
        except (PodSetupError, OSError, ValueError) as exc:
            logger.warning("pod %s cannot start: %s", pod["metadata"]["name"], exc)
            await self._status(
                pod,
                {
                    "containerStatuses": [
                        {
                            "name": cname,
                            "ready": False,
                            "restartCount": 0,
                            "image": container.get("image", ""),
                            "state": {
                                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                            },
                        }
                    ]
                },
            )
            return
        started = now_rfc3339()
        with (run.root / "log.txt").open("wb") as log:
            run.proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=str(run.root),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            if run.deleted:
                await self._terminate(run, run.grace)
            await self._status(
                pod,
                {
                    "phase": "Running",
                    "startTime": started,
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                    "containerStatuses": [
                        {
                            "name": cname,
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "image": container.get("image", ""),
                            "state": {"running": {"startedAt": started}},
                        }
                    ],
                },
            )
            code = await run.proc.wait()
        kill_pod_processes(str(pod["metadata"].get("uid", "")))  # the container ends with its main process
        if run.gone:
            return  # the pod is gone: nothing to report
        message = (
            term_log.read_text(encoding="utf-8", errors="replace")[-MAX_MESSAGE:] if term_log.exists() else ""
        )
        if not message and code != 0:  # terminationMessagePolicy FallbackToLogsOnError
            tail = (run.root / "log.txt").read_bytes()[-2048:].decode(errors="replace")
            message = tail
        if code < 0:  # killed by a signal: report 128+n like a container runtime
            code = 128 - code
        finished = now_rfc3339()
        terminated: JsonDict = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": finished,
        }
        if message:
            terminated["message"] = message
        await self._status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "PodCompleted",
                        "lastTransitionTime": finished,
                    }
                ],
                "containerStatuses": [
                    {
                        "name": cname,
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "image": container.get("image", ""),
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )
        logger.info("pod %s exited with %s", pod["metadata"]["name"], code)
        if run.deleted:
            self._confirm_deletion(pod)

    async def _terminate(self, run: _Running, grace: float) -> None:
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    @property
    def running(self) -> int:
        return sum(1 for run in self._pods.values() if run.proc is not None and run.proc.returncode is None)
