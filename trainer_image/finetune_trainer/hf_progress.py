"""What the HF Trainer-based engines share (sentence-transformers, llm): the checkpoint to resume from, and the
callback for progress reports, checkpoint bookkeeping and the SIGTERM stop agreed by every rank."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from . import distributed as ddp
from .checkpoints import Interrupted, latest_valid_checkpoint
from .context import Eta, TrainContext

log = logging.getLogger(__name__)


def resume_point(root: Path, required: tuple[str, ...]) -> tuple[Path | None, int]:
    """The Trainer checkpoint to resume from (None: a fresh start) and its global step; rank 0 chooses (and
    cleans up), every rank resumes from it."""
    resume = ddp.broadcast_object(latest_valid_checkpoint(root, required) if ddp.is_main() else None)
    if resume is None:
        return None, 0
    start = int(json.loads((resume / "trainer_state.json").read_text())["global_step"])
    log.info("resuming from checkpoint %s (step %d)", resume, start)
    return resume, start


def train_to_end(trainer: Any, resume: Path | None, runner: TrainerRunner) -> tuple[Any, float, int, int]:
    """Run `trainer` (resuming from `resume`); every rank waits for rank 0's last checkpoint, then raises
    Interrupted when a stop ended it early. Returns the Trainer's output, wall seconds, step and total steps."""
    t0 = time.monotonic()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.monotonic() - t0
    ddp.barrier()  # rank 0's last checkpoint is complete before any rank goes on (or exits 4)
    step, total = int(trainer.state.global_step), int(trainer.state.max_steps)
    if (runner.ctx.stop or runner.stopped) and step < total:
        raise Interrupted(step)
    return out, wall, step, total


class TrainerRunner(Protocol):
    """What the callback needs of its engine: the train context and where to record an agreed stop."""

    stopped: bool

    @property
    def ctx(self) -> TrainContext[Any]: ...


class ProgressCallback(TrainerCallback):  # type: ignore[misc]
    """Reports progress each step (rank 0), saves and stops on an agreed SIGTERM, skips the Trainer's forced
    end-of-training checkpoint (the finished model is saved by the engine), and records each saved checkpoint."""

    def __init__(self, runner: TrainerRunner, start_step: int) -> None:
        self.runner = runner
        self.eta = Eta(start_step)
        self.loss: float | None = None

    def _progress(self, state: Any) -> dict[str, Any]:
        total = int(state.max_steps)
        return {
            "step": int(state.global_step),
            "total_steps": total,
            "epoch": round(float(state.epoch or 0), 3),
            "loss": self.loss,
            "eta_seconds": self.eta(int(state.global_step), total),
            "stage": "train",
        }

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self.logged_loss(int(state.global_step), self.loss)

    def logged_loss(self, step: int, loss: float) -> None:
        """A training loss the Trainer logged at `step`; engines that keep the curve themselves override it."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        ctx = self.runner.ctx
        if ddp.agree_stop(bool(ctx.stop)):  # every rank stops at the same step (a no-op in one process)
            self.runner.stopped = True
            control.should_save = True
            control.should_training_stop = True
        elif state.global_step >= state.max_steps and state.global_step % max(1, int(args.save_steps)):
            # the Trainer's forced end-of-training checkpoint (optimizer state included) is not a periodic
            # one: the finished model is saved by the engine, so skip it
            control.should_save = False
        if ddp.is_main():
            ctx.reporter.report(self._progress(state))
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not ddp.is_main():  # the Trainer saves on rank 0; rank 0 reports it
            return
        ctx = self.runner.ctx
        step = int(state.global_step)
        path = ctx.checkpoint_root / f"checkpoint-{step}"
        ctx.checkpoint_saved(step, path, self.loss, f"checkpoints/{path.name}")
        ctx.reporter.report(self._progress(state), ctx.checkpoints)
