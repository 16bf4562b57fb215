"""Shared helpers of the emulator integration tests (HTTP calls, waits, manifests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from finetune_operator.local.emulator import Emulator
from finetune_operator.local.kubelet import FakeKubelet

FTJ = "/apis/finetune.dev/v1alpha1/namespaces/default/finetunejobs"
TQ = "/apis/finetune.dev/v1alpha1/trainingquotas"
CM = "/api/v1/namespaces/default/configmaps"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


def crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.finetune.dev"},
        "spec": {
            "group": "finetune.dev",
            "scope": scope,
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "shortNames": [kind[:3].lower()],
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


CRDS = [crd("FinetuneJob", "finetunejobs", "Namespaced"), crd("TrainingQuota", "trainingquotas", "Cluster")]


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, path, json=body, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def ftj(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name},
        "spec": spec or {"model": "m"},
    }


async def watch_events(
    http: aiohttp.ClientSession,
    path: str,
    params: dict[str, str],
    count: int | None = None,
    timeout: float = 5.0,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.get(path, params={"watch": "true", **params}) as resp:
        assert resp.status == 200

        async def read() -> None:
            async for line in resp.content:
                if line.strip():
                    events.append(json.loads(line))
                    if count is not None and len(events) >= count:
                        return

        await asyncio.wait_for(read(), timeout)
    return events


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "t"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "i"}]},
            },
            **spec,
        },
    }


async def pods_of(
    emu: Emulator, name: str, count: int = 1, phase: str | None = "Pending"
) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]]:
        pods = await FakeKubelet(emu).pods("default", label_selector=f"job-name={name}", phase=phase)
        return pods if len(pods) >= count else []

    result: list[dict[str, Any]] = await eventually(check)
    return result


async def job_condition(emu: Emulator, name: str, kind: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = emu.store.get("jobs", "default", name) or {}
        conds = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind]
        return obj if conds and conds[0]["status"] == "True" else None

    result: dict[str, Any] = await eventually(check)
    return result
