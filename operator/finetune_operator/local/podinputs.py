"""A pod's inputs on this machine, as a kubelet prepares them: volumes as directories (ConfigMap and Secret
items as files, PVCs as WORKDIR/pvc/<claim>, projected service-account tokens, emptyDirs) and the container's
environment (values, ``secretKeyRef``, ``configMapKeyRef``, downward-API ``fieldRef``), with container paths
rewritten to host paths."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finetune_operator.local.emulator import Emulator
from finetune_operator.local.podnet import field_value
from finetune_operator.local.semantics import JsonDict


class PodSetupError(Exception):
    """The pod cannot start (a missing ConfigMap or Secret): reported like CreateContainerConfigError."""


def rewrite(value: Any, mapping: Mapping[str, str]) -> Any:
    """Replace container path prefixes by host paths in every string of a JSON-like value."""
    if isinstance(value, str):
        for prefix in sorted(mapping, key=len, reverse=True):
            if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
                return mapping[prefix] + value[len(prefix) :]
        return value
    if isinstance(value, list):
        return [rewrite(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: rewrite(v, mapping) for k, v in value.items()}
    return value


class PodInputs:
    """Reads ConfigMaps and Secrets from the emulator and lays a pod's volumes out below a root directory."""

    def __init__(self, emu: Emulator, workdir: Path, extra_env: Mapping[str, str], token: str) -> None:
        self.emu = emu
        self.workdir = workdir
        self.extra_env = dict(extra_env)
        self.token = token

    def secret(self, ns: str, name: str) -> dict[str, str] | None:
        obj = self.emu.store.get("secrets", ns, name)
        if obj is None:
            return None
        out = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        out.update(obj.get("stringData") or {})
        return out

    def config_map(self, ns: str, name: str) -> dict[str, str] | None:
        obj = self.emu.store.get("configmaps", ns, name)
        return None if obj is None else dict(obj.get("data") or {})

    def write_items(self, target: Path, data: Mapping[str, str], items: list[JsonDict] | None) -> None:
        target.mkdir(parents=True, exist_ok=True)
        pairs: list[tuple[str, str]] = (
            [(str(i["key"]), str(i.get("path") or i["key"])) for i in items]
            if items
            else [(k, k) for k in data]
        )
        for key, path in pairs:
            if key not in data:
                raise PodSetupError(f"key {key!r} not found")
            dest = target / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(data[key], encoding="utf-8")

    def volume(self, ns: str, vol: JsonDict, root: Path) -> Path:
        name = str(vol["name"])
        target: Path = root / "volumes" / name
        if "persistentVolumeClaim" in vol:
            path: Path = self.workdir / "pvc" / str(vol["persistentVolumeClaim"]["claimName"])
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "configMap" in vol:
            ref = vol["configMap"]
            data = self.config_map(ns, ref["name"])
            if data is None:
                if ref.get("optional"):
                    target.mkdir(parents=True, exist_ok=True)
                    return target
                raise PodSetupError(f'configmap "{ref["name"]}" not found')
            self.write_items(target, data, ref.get("items"))
            return target
        if "secret" in vol:
            ref = vol["secret"]
            sdata = self.secret(ns, ref["secretName"])
            if sdata is None:
                raise PodSetupError(f'secret "{ref["secretName"]}" not found')
            self.write_items(target, sdata, ref.get("items"))
            return target
        if "projected" in vol:
            target.mkdir(parents=True, exist_ok=True)
            for src in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in src:
                    (target / src["serviceAccountToken"].get("path", "token")).write_text(self.token)
                elif "configMap" in src:
                    cm = self.config_map(ns, src["configMap"]["name"])
                    if cm is not None:  # kube-root-ca.crt does not exist locally (plain HTTP)
                        self.write_items(target, cm, src["configMap"].get("items"))
                elif "secret" in src:
                    sec = self.secret(ns, src["secret"]["name"])
                    if sec is not None:
                        self.write_items(target, sec, src["secret"].get("items"))
            return target
        target.mkdir(parents=True, exist_ok=True)  # emptyDir and anything else: a scratch directory
        return target

    def env(self, pod: JsonDict, container: JsonDict, mapping: Mapping[str, str]) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
        env.update(self.extra_env)
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = str(rewrite(str(item["value"]), mapping))
                continue
            source = item.get("valueFrom") or {}
            value: str | None = None
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = (self.secret(ns, ref["name"]) or {}).get(ref["key"])
                if value is None and not ref.get("optional"):
                    raise PodSetupError(f'secret "{ref["name"]}" key "{ref["key"]}" not found')
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = (self.config_map(ns, ref["name"]) or {}).get(ref["key"])
                if value is None and not ref.get("optional"):
                    raise PodSetupError(f'configmap "{ref["name"]}" key "{ref["key"]}" not found')
            elif "fieldRef" in source:
                value = field_value(pod, source["fieldRef"]["fieldPath"])
            if value is not None:
                env[name] = value
        return env
