"""A FinetuneJob whose training can only hurt (every training query points at a wrong document), run by
the real operator against the emulator with a real trainer (local executor, CPU): the job still succeeds,
publishes the base model (the adapter's identity at step 0), and says so: ModelImproved=False with reason
NoImprovement and the figures, a Warning Event, and status.metrics with bestStep 0 and the curve."""

from __future__ import annotations

import json
import random
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


def _mislabelled(data: dict[str, Any]) -> dict[str, Any]:
    """The quickstart ConfigMap with each training query pointed at a random wrong document."""
    train = json.loads(data["data"]["train.json"])
    docs = sorted(train["corpus"])
    rng = random.Random(0)
    train["relevant_docs"] = {
        q: [rng.choice([d for d in docs if d not in rel])] for q, rel in train["relevant_docs"].items()
    }
    return {**data, "data": {**data["data"], "train.json": json.dumps(train)}}


async def test_a_job_that_cannot_help_publishes_the_base_model_and_says_so(tmp_path: Path) -> None:
    job = yaml.safe_load((ROOT / "examples/quickstart/adapter-job.yaml").read_text())
    name = job["metadata"]["name"] = "cannot-help"
    job["metadata"]["namespace"] = NS
    job["spec"]["engine"]["adapter"].update({"epochs": 2, "learningRate": 0.5})
    data = _mislabelled(yaml.safe_load((ROOT / "examples/quickstart/dataset.yaml").read_text()))
    workdir = tmp_path / "work"
    (workdir / "pvc" / "finetune-output").mkdir(parents=True)
    async with Emulator(crds=list(all_crds().values())) as emu:
        operator = RunningOperator(fast_settings(emu.url, progress_interval_seconds=0.5))
        await operator.start()
        try:
            async with LocalExecutor(emu, workdir):
                await emu.create({**data, "metadata": {**data["metadata"], "namespace": NS}})
                await emu.create(job)
                status = await eventually(
                    lambda: _status(emu, name).get("phase") in ("Succeeded", "Failed") and _status(emu, name),
                    timeout=400,
                )
                events = await eventually(
                    lambda: [e for e in emu.store.list("events", NS) if e["reason"] == "NoImprovement"],
                    timeout=30,
                )
        finally:
            await operator.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    conditions = {c["type"]: c for c in status["conditions"]}
    improved = conditions["ModelImproved"]
    assert improved["status"] == "False" and improved["reason"] == "NoImprovement", improved
    metrics = status["metrics"]
    assert metrics["bestStep"] == 0 and metrics["modelImproved"] is False, metrics
    before, after = metrics["before"]["mrrAt10"], metrics["after"]["mrrAt10"]
    assert after == pytest.approx(before)  # the published model is the base model
    assert f"{before:.4f}" in improved["message"]
    curve = metrics["validationCurve"]
    assert curve[0]["step"] == 0 and min(p["mrrAt10"] for p in curve[1:]) < before  # training hurt
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert events[0]["message"] == improved["message"]
    assert status["model"]["storageUri"].startswith("pvc://finetune-output/quickstart")
    assert emu.warnings == []
