"""What the runner hands an engine, and what an engine hands back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol

from typing_extensions import TypeVar

from .checkpoints import StopFlag
from .data import EmbeddingQADataset
from .progress import Reporter

# The data an engine trains on: EmbeddingQA datasets for the embedding engines (the default), llm_data.ChatData
# for the llm engine.
D = TypeVar("D", default=EmbeddingQADataset)


@dataclass
class TrainContext(Generic[D]):
    train: D
    validation: D
    work_dir: Path  # local output dir (uploaded afterwards when the output is s3://)
    reporter: Reporter
    stop: StopFlag
    seed: int = 42
    checkpoint_steps: int = 100
    keep_checkpoints: int = 3
    on_checkpoint: Callable[[int, Path], None] | None = None  # (step, path) after each saved checkpoint
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checkpoint_root(self) -> Path:
        return self.work_dir / "checkpoints"

    def checkpoint_saved(self, step: int, path: Path, loss: float | None, uri: str) -> None:
        from datetime import UTC, datetime

        entry: dict[str, Any] = {
            "step": step,
            "uri": uri,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if loss is not None:
            entry["loss"] = loss
        existing = (
            {p.name for p in self.checkpoint_root.iterdir()} if self.checkpoint_root.is_dir() else set()
        )
        self.checkpoints = [c for c in self.checkpoints if c["uri"].rsplit("/", 1)[-1] in existing]
        self.checkpoints = [c for c in self.checkpoints if c["step"] != step] + [entry]
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, path)


@dataclass
class TrainOutcome:
    steps: int
    total_steps: int
    train_loss: float | None
    wall_seconds: float
    samples: int  # training pairs processed in this run (resumed steps excluded)
    losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int | None = None
    selection: dict[str, Any] | None = None  # metrics.Selection.summary(): best step, validation curve
    extra: dict[str, Any] = field(default_factory=dict)  # engine figures for result.json (frozen pass, ...)


class Engine(Protocol):
    model_format: str
    base_model: str

    def prepare(self) -> None: ...

    def evaluate(self, trained: bool) -> dict[str, Any]: ...

    def train(self) -> TrainOutcome: ...

    def save(self, path: Path) -> None: ...


class Eta:
    """Remaining-time estimate from the steps done in this run."""

    def __init__(self, start_step: int) -> None:
        self.t0 = time.monotonic()
        self.s0 = start_step

    def __call__(self, step: int, total: int) -> int | None:
        done = step - self.s0
        if done <= 0:
            return None
        return int((time.monotonic() - self.t0) / done * (total - step))
