"""A SIGTERM to one rank of a world-size-2 run (torchrun through finetune_trainer.distributed, gloo on CPU):
every rank stops at the same step, rank 0 writes one checkpoint, every rank exits 4 and so does the launcher;
the checkpoint then resumes in one process (another world size) to the same step count."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.trainer_fixtures import TRAIN, VAL, build_tiny_model, small_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENTRY = "import sys\nfrom finetune_trainer.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _flags(tmp: Path, out: Path) -> list[str]:
    return [
        *("train", "--engine", "sentence-transformers", "--model", str(tmp / "tiny")),
        *("--train", str(tmp / "train.json"), "--val", str(tmp / "val.json"), "--output", str(out)),
        *("--epochs", "6", "--batch-size", "16", "--learning-rate", "1e-4", "--checkpoint-steps", "1000"),
        *("--no-progress", "--seed", "3"),
    ]


def test_sigterm_to_one_rank_checkpoints_once_and_every_rank_exits_4(tmp_path: Path) -> None:
    import psutil

    build_tiny_model(tmp_path / "tiny")
    small_dataset(tmp_path / "train.json", TRAIN, 64)  # 4 steps an epoch, 24 in all
    small_dataset(tmp_path / "val.json", VAL, 16)
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    out, log = tmp_path / "out", tmp_path / "torchrun.log"
    launch = [sys.executable, "-m", "finetune_trainer.distributed", "--standalone", "--nnodes=1"]
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*launch, "--nproc-per-node=2", str(entry), *_flags(tmp_path, out)],
            env=ENV,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while "'loss'" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)  # training has started (the first loss is logged)
        workers = psutil.Process(proc.pid).children(recursive=True)
        (rank1,) = [w for w in workers if w.environ().get("RANK") == "1"]
        rank1.send_signal(signal.SIGTERM)  # only rank 1 is told to stop
        code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 4, text[-3000:]
    # rank 1 either exits 4 itself or, still tearing down after the checkpoint barrier, is SIGTERMed by
    # torchrun once rank 0 has exited 4; both count as a checkpointed stop
    assert re.search(r"trainer workers failed with exit codes \[(4, 4|4, -15|-15, 4)\]: exiting 4", text), (
        text[-3000:]
    )
    stops = [json.loads(line) for line in text.splitlines() if line.startswith('{"status":"interrupted"')]
    assert len(stops) == 2 and stops[0]["steps"] == stops[1]["steps"]  # both ranks, at the same step
    step = stops[0]["steps"]
    assert 0 < step < 24
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"checkpoint-{step}"]
    assert json.loads((out / "result.json").read_text())["status"] == "interrupted"

    resumed = subprocess.run(
        [sys.executable, str(entry), *_flags(tmp_path, out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == result["totalSteps"] == 24 and result["resumedFrom"] == step
