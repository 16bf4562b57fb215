"""Atomic checkpoints: a process SIGKILLed in the middle of a checkpoint write (deterministically, by a hook that
kills itself after part of the files) leaves no `checkpoint-N` that resume rejects, and resume picks the previous
complete checkpoint and removes the staging directory. Both ways of writing: `atomic_checkpoint` (the adapter
engine) and the real transformers Trainer with `AtomicCheckpointsMixin` (the sentence-transformers engine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetune_trainer.checkpoints import (
    atomic_checkpoint,
    clean_staging,
    is_valid_checkpoint,
    latest_valid_checkpoint,
    list_checkpoints,
)

pytestmark = pytest.mark.unit
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run_killed(script: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def test_sigkill_in_the_middle_of_a_write_resumes_from_the_previous_checkpoint(tmp_path: Path) -> None:
    _run_killed(
        """
        import json, os, signal, sys
        from pathlib import Path
        from finetune_trainer.checkpoints import atomic_checkpoint

        root = Path(sys.argv[1])
        for step in (10, 20):
            with atomic_checkpoint(root, step) as tmp:
                (tmp / "state.json").write_text(json.dumps({"step": step}))
                (tmp / "weights.dat").write_bytes(b"x" * 1000)
                if step == 20:
                    os.kill(os.getpid(), signal.SIGKILL)  # half-way through the second checkpoint
        """,
        tmp_path,
    )
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10]
    assert (tmp_path / ".tmp-checkpoint-20").is_dir()  # the interrupted write, under a name resume ignores
    assert latest_valid_checkpoint(tmp_path, ("state.json",)) == tmp_path / "checkpoint-10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]  # staging removed


def test_rewrite_of_the_same_step_and_leftovers(tmp_path: Path) -> None:
    for payload in ("first", "second"):
        with atomic_checkpoint(tmp_path, 5) as tmp:
            (tmp / "state.json").write_text(f'"{payload}"')
    assert (tmp_path / "checkpoint-5" / "state.json").read_text() == '"second"'
    with pytest.raises(RuntimeError), atomic_checkpoint(tmp_path, 6) as tmp:
        (tmp / "state.json").write_text("{")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]
    # a rewrite interrupted between moving the old copy aside and the rename: the old copy comes back
    (tmp_path / "checkpoint-5").rename(tmp_path / ".old-checkpoint-5")
    (tmp_path / ".tmp-checkpoint-5").mkdir()
    (tmp_path / "checkpoint-7.partial").mkdir()  # an earlier version's staging name
    clean_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


_HF_SCRIPT = """
import os, signal, sys
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments
from finetune_trainer.checkpoints import AtomicCheckpointsMixin, latest_valid_checkpoint

torch.set_num_threads(1)
root, kill_at = Path(sys.argv[1]), int(sys.argv[2])


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x, labels):
        return {"loss": torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), labels)}


class Killing(AtomicCheckpointsMixin, Trainer):
    def _save_rng_state(self, output_dir):  # model, optimizer and scheduler are written by now
        if self.state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._save_rng_state(output_dir)


torch.manual_seed(0)
data = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(16)]
args = TrainingArguments(
    output_dir=str(root), max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=2,
    save_total_limit=1, report_to="none", disable_tqdm=True, use_cpu=True,
)
resume = latest_valid_checkpoint(root, ("trainer_state.json", "optimizer.pt", "scheduler.pt"))
print("RESUME", resume.name if resume else None, flush=True)
trainer = Killing(model=Tiny(), args=args, train_dataset=data)
trainer.train(resume_from_checkpoint=str(resume) if resume else None)
print("DONE", trainer.state.global_step, flush=True)
"""


def test_transformers_trainer_killed_mid_checkpoint_resumes_from_previous(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    cmd = [sys.executable, "-c", _HF_SCRIPT, str(tmp_path)]
    killed = subprocess.run([*cmd, "4"], env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # checkpoint-4 was half written when the process died: only its staging dir exists; checkpoint-2 was
    # kept (rotation to save_total_limit=1 runs only after a new checkpoint is in place)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]
    assert (tmp_path / ".tmp-checkpoint-4" / "checkpoint-4" / "optimizer.pt").is_file()
    assert is_valid_checkpoint(
        tmp_path / "checkpoint-2", ("trainer_state.json", "optimizer.pt", "scheduler.pt")
    )

    resumed = subprocess.run([*cmd, "0"], env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESUME checkpoint-2" in resumed.stdout and "DONE 6" in resumed.stdout
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert [step for step, _ in list_checkpoints(tmp_path)] == [6]  # rotated to one, the newest
