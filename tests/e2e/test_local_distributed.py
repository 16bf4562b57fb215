"""Distributed training end to end on CPU: a 2-node sentence-transformers FinetuneJob (world size 2, gloo over
loopback) through the emulator, the real operator, the Indexed Job controller and the local kubelet.

1. `finetune local`: the job succeeds, and its per-step losses and final weights equal a single-process run
   with the same global batch (dropout off, so both runs are deterministic), which they can only do if each
   rank scores its anchors against the other rank's positives too.
2. One rank SIGKILLed mid-training: the attempt fails, the next attempt resumes from the newest checkpoint
   and ends at the same step count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.trainer_fixtures import TRAIN, TRAINER_ENV, VAL, build_tiny_model, small_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

BATCH, LR, SEED = 16, 1e-4, 3


def _tiny(path: Path) -> Path:
    """The 2-layer model with dropout off (DDP and one process then compute the same numbers)."""
    build_tiny_model(path)
    config = json.loads((path / "config.json").read_text())
    config["hidden_dropout_prob"] = config["attention_probs_dropout_prob"] = 0.0
    (path / "config.json").write_text(json.dumps(config))
    return path


def _manifests(tmp: Path, epochs: int, checkpoint_steps: int) -> Path:
    train = small_dataset(tmp / "train.json", TRAIN, 64)  # 64 pairs: 4 global batches of 16 per epoch
    val = small_dataset(tmp / "val.json", VAL, 16)
    data = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dist-data"},
        "data": {"train.json": train.read_text(), "val.json": val.read_text()},
    }
    job = yaml.safe_load((Path(__file__).parents[2] / "examples/distributed/st-2-nodes.yaml").read_text())
    job["metadata"] = {"name": "dist-st"}
    job["spec"]["engine"]["sentenceTransformers"].update(
        model="pvc://models/tiny",
        epochs=epochs,
        batchSize=BATCH,
        learningRate=LR,
        evaluationSteps=0,
        precision="fp32",  # bf16 autocast (the CPU default where it is native) rounds per rank: fp32 compares
    )
    job["spec"]["dataset"] = {
        "train": {"configMap": {"name": "dist-data", "key": "train.json"}},
        "validation": {"configMap": {"name": "dist-data", "key": "val.json"}},
    }
    job["spec"]["output"] = {
        "storageUri": "pvc://out/runs",
        "checkpointSteps": checkpoint_steps,
        "keepCheckpoints": 10,
    }
    job["spec"]["placement"]["resources"] = {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"}
    job["spec"]["runPolicy"] = {"backoffLimit": 2}
    job["spec"].pop("s3", None)  # the output is a local "volume" here
    job["spec"]["seed"] = SEED
    out = tmp / "manifests"
    out.mkdir()
    (out / "job.yaml").write_text(yaml.safe_dump_all([data, job]))
    return out


def _losses(checkpoint: Path) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [float(h["loss"]) for h in state["log_history"] if "loss" in h]


def test_two_nodes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    work = tmp_path / "work"
    model = _tiny(work / "pvc/models/tiny")
    manifests = _manifests(tmp_path, epochs=2, checkpoint_steps=4)
    argv = ["local", str(manifests), "--workdir", str(work), "--timeout", "300"]
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_operator.cli", *argv],
        env=TRAINER_ENV,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pods = sorted(p.name for p in (work / "pods/default").iterdir())
    assert [p.rsplit("-", 1)[0] for p in pods] == ["dist-st-a1-0", "dist-st-a1-1"]  # one pod per index
    assert "rank 1: training done" in (work / "pods/default" / pods[1] / "log.txt").read_text()
    dist_out = work / "pvc/out/runs/default/dist-st"
    result = json.loads((dist_out / "result.json").read_text())
    assert result["steps"] == result["totalSteps"] == 8

    ref_out = tmp_path / "single"
    flags = [
        *("train", "--engine", "sentence-transformers", "--model", str(model)),
        *("--train", str(tmp_path / "train.json"), "--val", str(tmp_path / "val.json")),
        *("--output", str(ref_out), "--epochs", "2", "--batch-size", str(BATCH)),
        *("--learning-rate", str(LR), "--checkpoint-steps", "4", "--keep-checkpoints", "10"),
        *("--no-progress", "--seed", str(SEED)),
    ]
    entry = "import sys; from finetune_trainer.cli import main; sys.exit(main(sys.argv[1:]))"
    ref = subprocess.run(
        [sys.executable, "-c", entry, *flags],
        env={**TRAINER_ENV, "FINETUNE_CPU_PRECISION": "fp32"},  # as the job's precision: fp32
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    single = _losses(ref_out / "checkpoints/checkpoint-8")
    distributed = _losses(dist_out / "checkpoints/checkpoint-8")
    assert len(single) == len(distributed) == 8
    assert distributed == pytest.approx(single, rel=1e-4, abs=1e-4)
    a = load_file(str(ref_out / "model/model.safetensors"))
    b = load_file(str(dist_out / "model/model.safetensors"))
    base = load_file(str(model / "model.safetensors"))
    moved = max(float((a[k] - base[k]).abs().max()) for k in a)  # Adam moves weights ~lr a step: ~8e-4
    assert moved > 1e-4
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < moved / 20


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torchrun starts its workers in sessions of their own)."""
    import psutil

    root = psutil.Process(pid)
    for proc in [*root.children(recursive=True), root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)


Act = Callable[[Any, Any, list[int]], Awaitable[int | None]]


async def _run_with(manifests: Path, work: Path, act: Act) -> tuple[dict[str, Any], int]:
    """Run the manifests on the emulator with the real operator and local kubelet; once a checkpoint exists,
    `act(emulator, executor, checkpoint steps)` may disrupt the job (it returns the newest checkpoint step
    when it did). Returns the finished FinetuneJob and that step."""
    from finetune_operator.api.crdgen import all_crds
    from finetune_operator.local.emulator import Emulator
    from finetune_operator.local.executor import LocalExecutor
    from finetune_operator.local.runner import _start_operator, load_manifests, local_settings

    ckpts = work / "pvc/out/runs/default/dist-st/checkpoints"
    async with Emulator(crds=list(all_crds().values())) as emu:
        settings = local_settings(emu.url, retry_backoff_seconds=1.0)
        thread, stop, errors = _start_operator(settings)
        env = {k: TRAINER_ENV[k] for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE")}
        executor = LocalExecutor(emu, work, extra_env=env)
        await executor.start()
        try:
            for doc in load_manifests([manifests]):
                await emu.create(doc)
            acted_at = -1
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and not errors:
                done = sorted(
                    int(p.parent.name.split("-")[1]) for p in ckpts.glob("checkpoint-*/trainer_state.json")
                )
                if acted_at < 0 and done:
                    acted = await act(emu, executor, done)
                    acted_at = acted if acted is not None else -1
                job = emu.store.get("finetunejobs", "default", "dist-st") or {}
                if (job.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return job, acted_at
                await asyncio.sleep(0.2)
            raise AssertionError(f"the job did not finish: {errors}")
        finally:
            await executor.stop()
            stop.set()
            await asyncio.to_thread(thread.join, 30)


def _rank1(executor: Any) -> Any:
    runs = [
        run
        for run in executor._pods.values()  # (the test plays the node)
        if run.pod["metadata"]["name"].startswith("dist-st-a1-1-") and run.proc is not None
    ]
    return runs[0] if runs else None


async def _oom_kill_rank1(emu: Any, executor: Any, done: list[int]) -> int | None:
    run = _rank1(executor)
    if run is None:
        return None
    _kill_tree(run.proc.pid)  # the pod's torchrun and its worker, as an OOM kill
    return done[-1]


def test_killing_one_rank_resumes_the_next_attempt_from_the_checkpoint(tmp_path: Path) -> None:
    work = tmp_path / "work"
    _tiny(work / "pvc/models/tiny")
    manifests = _manifests(tmp_path, epochs=4, checkpoint_steps=2)  # 16 steps, a checkpoint every 2
    job, killed_after = asyncio.run(_run_with(manifests, work, _oom_kill_rank1))
    status = job["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert killed_after >= 2 and status["attempts"] == 2 and status["failedAttempts"] == 1
    result = json.loads((work / "pvc/out/runs/default/dist-st/result.json").read_text())
    assert result["attempt"] == 2 and result["steps"] == result["totalSteps"] == 16
    assert result["resumedFrom"] >= killed_after  # the newest checkpoint when the rank died (or a later one)
    pods = sorted(p.name.rsplit("-", 1)[0] for p in (work / "pods/default").iterdir())
    assert pods == ["dist-st-a1-0", "dist-st-a1-1", "dist-st-a2-0", "dist-st-a2-1"]
