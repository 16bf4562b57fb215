"""Helpers of the operator integration tests: manifests, a realistic trainer result, waits on the emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.conftest import eventually

from finetune_operator.local.emulator import Emulator

NS = "default"
GPU = "nvidia.com/gpu"


def st_job(name: str = "ft", **run_policy: Any) -> dict[str, Any]:
    """A sentenceTransformers FinetuneJob with ConfigMap data and a PVC output."""
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "engine": {
                "sentenceTransformers": {"model": "sentence-transformers/all-MiniLM-L6-v2", "epochs": 1}
            },
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://models/runs"},
            "placement": {"resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"}},
            "runPolicy": run_policy,
        },
    }


def result_json(job: str = "ft") -> str:
    """What the trainer writes to its termination message."""
    return json.dumps(
        {
            "status": "succeeded",
            "engine": "sentenceTransformers",
            "modelDir": f"/output/runs/{NS}/{job}/model",
            "metrics": {
                "before": {"hitRateAt1": 0.41, "mrrAt10": 0.52, "ndcgAt10": 0.58, "queries": 40},
                "after": {"hitRateAt1": 0.63, "mrrAt10": 0.71, "ndcgAt10": 0.75, "queries": 40},
                "trainLoss": 0.83,
                "wallSeconds": 12.5,
            },
            "dataset": {"trainQueries": 160, "validationQueries": 40, "corpusSize": 200},
        }
    )


def status_of(emu: Emulator, name: str = "ft") -> dict[str, Any]:
    obj = emu.store.get("finetunejobs", NS, name) or {}
    return dict(obj.get("status") or {})


async def wait_phase(emu: Emulator, phase: str, name: str = "ft", timeout: float = 30.0) -> dict[str, Any]:
    await eventually(lambda: status_of(emu, name).get("phase") == phase, timeout=timeout)
    return status_of(emu, name)


async def wait_pod(emu: Emulator, attempt: int, name: str = "ft", timeout: float = 30.0) -> dict[str, Any]:
    """The pod of a trainer attempt, once the Job controller created it."""

    def find() -> dict[str, Any] | None:
        for pod in emu.store.list("pods", NS):
            labels = pod["metadata"].get("labels") or {}
            if labels.get("job-name") == f"{name}-a{attempt}" and not pod["metadata"].get(
                "deletionTimestamp"
            ):
                return dict(pod)
        return None

    result: dict[str, Any] = await eventually(find, timeout=timeout)
    return result


def created(emu: Emulator, plural: str) -> list[str]:
    """Names of every object of `plural` ever created (from the write history)."""
    return [r.name for r in emu.history if r.plural == plural and r.verb == "create" and not r.subresource]


def events_of(emu: Emulator, name: str = "ft") -> list[tuple[str, str]]:
    return [
        (e.get("type", ""), e.get("reason", ""))
        for e in emu.store.list("events", NS)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


async def data_config_map(emu: Emulator) -> None:
    await emu.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "data", "namespace": NS},
            "data": {"train.json": "{}"},
        }
    )


def register_quota_admission(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure the operator under test registers quota admission (idempotent if build_registry does)."""
    from finetune_operator import main
    from finetune_operator.handlers import build_registry as original
    from finetune_operator.quota_handlers import register_quota

    def build(settings: Any) -> Any:
        registry = original(settings)
        register_quota(registry)
        return registry

    monkeypatch.setattr(main, "build_registry", build)


async def start_running(emu: Emulator, kubelet: Any, job: dict[str, Any]) -> dict[str, Any]:
    """The data ConfigMap and `job` created, attempt 1's pod started on the kubelet, the job Running: the pod."""
    name = job["metadata"]["name"]
    await data_config_map(emu)
    await emu.create(job)
    pod = await wait_pod(emu, 1, name)
    await kubelet.run(pod)
    await wait_phase(emu, "Running", name)
    return pod


async def run_to_success(emu: Emulator, kubelet: Any, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """`st_job(name)` created, its first pod run and succeeded with `result_json(name)`: the Succeeded status."""
    await emu.create(st_job(name))
    pod = await wait_pod(emu, 1, name, timeout=timeout)
    await kubelet.run(pod)
    await kubelet.succeed(pod, message=result_json(name))
    return await wait_phase(emu, "Succeeded", name, timeout=timeout)
