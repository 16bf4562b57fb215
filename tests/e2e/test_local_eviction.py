"""An eviction through the Eviction API of a real trainer (local executor, CPU): DisruptionTarget, the
graceful delete's SIGTERM, the trainer's checkpoint and exit 4, then the operator's next attempt resumes from
that checkpoint without counting a failure, with an AttemptDisrupted Event -- what issue 11's v1.36 cluster
run showed, on the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import RunningOperator, eventually, fast_settings

from finetune_operator.api.crdgen import all_crds
from finetune_operator.local.emulator import Emulator
from finetune_operator.local.executor import LocalExecutor

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
NS = "default"


def _status(emu: Emulator, name: str) -> dict[str, Any]:
    return dict((emu.store.get("finetunejobs", NS, name) or {}).get("status") or {})


def _running_pod(emu: Emulator, job: str) -> dict[str, Any] | None:
    for pod in emu.store.list("pods", NS):
        labels = pod["metadata"].get("labels") or {}
        if labels.get("job-name") == job and (pod.get("status") or {}).get("phase") == "Running":
            return dict(pod)
    return None


async def test_evicted_trainer_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    job = yaml.safe_load((ROOT / "examples/quickstart/adapter-job.yaml").read_text())
    name = job["metadata"]["name"] = "evicted"
    job["metadata"]["namespace"] = NS
    job["spec"]["engine"]["adapter"]["epochs"] = 30  # long enough to be evicted mid-training
    job["spec"]["output"]["checkpointSteps"] = 5
    job["spec"]["runPolicy"] = {"backoffLimit": 0}  # a counted failure would end the job
    data = yaml.safe_load((ROOT / "examples/quickstart/dataset.yaml").read_text())
    workdir = tmp_path / "work"
    (workdir / "pvc" / "finetune-output").mkdir(parents=True)
    async with Emulator(crds=list(all_crds().values())) as emu:
        settings = fast_settings(emu.url, termination_grace_period_seconds=30, progress_interval_seconds=0.5)
        operator = RunningOperator(settings)
        await operator.start()
        try:
            async with LocalExecutor(emu, workdir):
                await emu.create({**data, "metadata": {**data["metadata"], "namespace": NS}})
                await emu.create(job)
                await eventually(
                    lambda: (_status(emu, name).get("checkpoints") or {}).get("latest"), timeout=300
                )
                pod = await eventually(lambda: _running_pod(emu, f"{name}-a1"), timeout=30)
                step = int(_status(emu, name)["checkpoints"]["latest"]["step"])
                await emu.evict(NS, pod["metadata"]["name"])
                status = await eventually(
                    lambda: _status(emu, name).get("phase") in ("Succeeded", "Failed") and _status(emu, name),
                    timeout=400,
                )
        finally:
            await operator.stop()
        assert status["phase"] == "Succeeded", status.get("message")
        assert status["attempts"] == 2 and status.get("failedAttempts", 0) == 0
        writes = [r.object for r in emu.history if r.plural == "pods" and r.name == pod["metadata"]["name"]]
        ended = next(o for o in writes if (o.get("status") or {}).get("phase") == "Failed")
        term = ended["status"]["containerStatuses"][0]["state"]["terminated"]
        assert term["exitCode"] == 4  # SIGTERM -> a checkpoint -> exit 4 (interrupted, resumable)
        assert any(c["type"] == "DisruptionTarget" for c in ended["status"]["conditions"])
        events = [e for e in emu.store.list("events", NS) if e["reason"] == "AttemptDisrupted"]
        assert len(events) == 1 and pod["metadata"]["name"] in events[0]["message"]
        second = next(
            r.object
            for r in reversed(emu.history)
            if r.plural == "pods"
            and (r.object["metadata"].get("labels") or {}).get("job-name") == f"{name}-a2"
            and (r.object.get("status") or {}).get("phase") == "Succeeded"
        )
        result = json.loads(second["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
        assert int(result["resumedFrom"]) >= step  # the second attempt resumed, from that checkpoint or later
        assert emu.warnings == []  # no status field the operator or the trainer wrote was pruned
