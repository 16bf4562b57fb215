"""Helpers of the operator integration tests: manifests, a realistic trainer result, waits on the emulator."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import eventually

from finetune_operator.local.emulator import Emulator

NS = "default"


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
