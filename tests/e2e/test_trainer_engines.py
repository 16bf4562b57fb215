"""Trainer end to end on CPU with a tiny 2-layer model: both engines, resume after SIGKILL, SIGTERM, invalid data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.trainer_fixtures import TRAIN, VAL, build_tiny_model, small_dataset

pytestmark = pytest.mark.e2e
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("data")
    return small_dataset(d / "train.json", TRAIN, 64), small_dataset(d / "val.json", VAL, 32)


def _train_cmd(engine: str, model: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from finetune_trainer.cli import main; sys.exit(main(sys.argv[1:]))",
        "train",
        "--engine",
        engine,
        "--model",
        str(model),
        "--train",
        str(data[0]),
        "--val",
        str(data[1]),
        "--output",
        str(out),
        "--no-progress",
        "--seed",
        "1",
        *extra,
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, check=False)


def test_adapter_engine_trains_and_improves(tiny: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    proc = _run(_train_cmd("adapter", tiny, data, tmp_path, "--epochs", "20", "--batch-size", "16"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["model"]["format"] == "adapter"
    assert result["totalSteps"] == 20 * 4 and 0 < result["steps"] <= 20 * 4  # may stop early (patience)
    assert result["metrics"]["modelImproved"] is True and result["metrics"]["bestStep"] > 0
    assert result["metrics"]["after"]["mrrAt10"] > result["metrics"]["before"]["mrrAt10"]
    assert (tmp_path / "model" / "adapter" / "pytorch_model.bin").is_file()
    assert (tmp_path / "training.png").is_file() and any((tmp_path / "tensorboard").iterdir())
    # Stock sentence-transformers loads it and applies the adapter to queries only.
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    q, d = m.encode_query(["hello"]), m.encode_document(["hello"])
    assert abs(q - d).max() > 1e-4


@pytest.mark.slow
def test_sentence_transformers_engine_trains(tiny: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    proc = _run(
        _train_cmd(
            "sentence-transformers",
            tiny,
            data,
            tmp_path,
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--learning-rate",
            "1e-4",
            "--checkpoint-steps",
            "2",
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 4 and result["model"]["format"] == "sentence-transformers"
    assert result["metrics"]["after"] != result["metrics"]["before"]
    assert len(result["checkpoints"]) >= 1


def test_invalid_dataset_exits_3_naming_ids(tiny: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    bad = json.loads(data[0].read_text())
    first = next(iter(bad["relevant_docs"]))
    bad["relevant_docs"][first] = ["no-such-doc-42"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    proc = _run(_train_cmd("adapter", tiny, (path, data[1]), tmp_path / "out"))
    assert proc.returncode == 3
    assert "no-such-doc-42" in proc.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "invalid" and "no-such-doc-42" in result["message"]


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((out / "checkpoints").glob("checkpoint-*/state.pt")) or list(
            (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
        ):
            return
        assert proc.poll() is None, "trainer exited before its first checkpoint"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_adapter_sigkill_then_resume_same_steps(tiny: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    args = ("--epochs", "400", "--batch-size", "16", "--checkpoint-steps", "20", "--patience", "0")
    proc = subprocess.Popen(
        _train_cmd("adapter", tiny, data, tmp_path, *args),
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for_checkpoint(tmp_path, proc)
    proc.kill()
    proc.communicate()
    assert not (tmp_path / "result.json").exists()
    resumed = _run(_train_cmd("adapter", tiny, data, tmp_path, *args))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 400 * 4


def test_adapter_sigterm_saves_and_exits_4(tiny: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    args = ("--epochs", "3000", "--batch-size", "16", "--checkpoint-steps", "100000", "--patience", "0")
    proc = subprocess.Popen(
        _train_cmd("adapter", tiny, data, tmp_path, *args),
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (tmp_path / "progress.jsonl").is_file() and '"stage": "train"' in (
            tmp_path / "progress.jsonl"
        ).read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-3000:]
    ckpts = list((tmp_path / "checkpoints").glob("checkpoint-*/state.pt"))
    assert len(ckpts) == 1
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "interrupted"
