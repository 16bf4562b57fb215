"""sentence-transformers engine: a run SIGKILLed after its first checkpoint resumes from it on the next run and
ends with the same step count as an uninterrupted run (tiny 2-layer model, CPU)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.trainer_fixtures import TRAIN, TRAINER_ENV, VAL, build_tiny_model, small_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
EPOCHS, BATCH, CKPT = 6, 16, 4  # 64 training queries -> 4 steps per epoch, 24 steps


def _cmd(model: Path, train: Path, val: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from finetune_trainer.cli import main; sys.exit(main(sys.argv[1:]))",
        "train",
        "--engine",
        "sentence-transformers",
        "--model",
        str(model),
        "--train",
        str(train),
        "--val",
        str(val),
        "--output",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(BATCH),
        "--learning-rate",
        "1e-4",
        "--checkpoint-steps",
        str(CKPT),
        "--keep-checkpoints",
        "10",
        "--no-progress",
        "--seed",
        "3",
    ]


def _complete_checkpoints(out: Path) -> list[int]:
    """Steps of checkpoints whose trainer state is written (HF writes trainer_state.json last)."""
    return sorted(
        int(p.parent.name.removeprefix("checkpoint-"))
        for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
    )


def test_sigkill_after_first_checkpoint_resumes_to_same_steps(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    train = small_dataset(tmp_path / "train.json", TRAIN, 64)
    val = small_dataset(tmp_path / "val.json", VAL, 16)

    # uninterrupted reference run
    ref = subprocess.run(
        _cmd(model, train, val, tmp_path / "ref"),
        env=TRAINER_ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_result = json.loads(ref.stdout.strip().splitlines()[-1])
    assert ref_result["steps"] == ref_result["totalSteps"] == EPOCHS * 64 // BATCH
    assert ref_result.get("resumedFrom") is None

    # a run killed (SIGKILL: no chance to save anything more) once its first checkpoint is complete
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cmd(model, train, val, out),
        env=TRAINER_ENV,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while not _complete_checkpoints(out):
        assert proc.poll() is None, "the trainer ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    assert proc.returncode != 0 and not (out / "result.json").exists()
    saved = _complete_checkpoints(out)
    assert saved and saved[-1] < ref_result["steps"], "the run finished before it was killed"

    # the rerun resumes from the newest complete checkpoint and reaches the same end
    resumed = subprocess.run(
        _cmd(model, train, val, out),
        env=TRAINER_ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"resuming from checkpoint \S+ \(step (\d+)\)", resumed.stderr)
    assert match is not None, resumed.stderr[-3000:]
    start = int(match.group(1))
    assert start in saved and start >= saved[0] > 0
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["resumedFrom"] == start
    assert result["steps"] == result["totalSteps"] == ref_result["steps"]
    assert {c["step"] for c in result["checkpoints"]} >= set(range(start + CKPT, result["steps"] + 1, CKPT))
    assert (out / "model" / "modules.json").is_file()
