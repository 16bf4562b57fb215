"""Validation-driven training for the sentence-transformers engine: a Trainer callback that evaluates at
step 0 (the base model, evaluated by the runner before training), every N steps or once per epoch, keeps
the best weights on disk, and stops early after a patience; and hard negatives mined with the base model."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune_operator.api.evaluation import EvaluationSpec, HardNegativesSpec

from . import distributed as ddp
from .data import EmbeddingQADataset
from .metrics import Selection, evaluate_model

log = logging.getLogger(__name__)

BEST_DIR = "selection"  # below the work dir: best.pt (the best weights) and state.json
STATE = "state.json"


class SelectionCallback(TrainerCallback):
    """Evaluate, keep the best, stop early. Rank 0 evaluates; its decision is broadcast to every rank."""

    def __init__(
        self, model: Any, validation: EmbeddingQADataset, spec: EvaluationSpec, every: int, work_dir: Path
    ) -> None:
        self.model, self.validation, self.every = model, validation, max(1, every)
        self.selection = Selection(spec.metric, spec.patience, spec.min_delta)
        self.dir = work_dir / BEST_DIR
        self.stopped_early = False

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def start(self, before: dict[str, Any] | None, resumed_step: int | None) -> None:
        """Step 0 is the base model's evaluation; a resumed run picks up its earlier curve."""
        state = self.dir / STATE
        if resumed_step is not None and state.is_file():
            self.selection.load(json.loads(state.read_text()))
            self.selection.curve = [p for p in self.selection.curve if p[0] <= resumed_step]
            return
        if before is not None:
            self.selection.record(0, before)
            self._write_state()

    def _write_state(self) -> None:
        if ddp.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / STATE).write_text(json.dumps(self.selection.state()))

    def _evaluate(self, step: int) -> tuple[bool, bool]:
        import torch

        t0 = time.monotonic()
        metrics = evaluate_model(self.model, self.validation)
        self.model.train()
        self.selection.seconds += time.monotonic() - t0
        improved = self.selection.record(step, metrics)
        if improved:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.best_path.with_suffix(".tmp")
            torch.save({"step": step, "state": self.model.state_dict()}, tmp)
            tmp.replace(self.best_path)
        self._write_state()
        log.info("%s", self.selection.describe(step, metrics))
        return improved, self.selection.should_stop

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        step, total = int(state.global_step), int(state.max_steps)
        if step % self.every and step < total:
            return control
        decision = self._evaluate(step) if ddp.is_main() else (False, False)
        _, stop = ddp.broadcast_object(decision) if ddp.launched() else decision
        if stop and step < total:
            log.info("early stop at step %d (best at step %s)", step, self.selection.best_step)
            self.stopped_early = True
            control.should_training_stop = True
            control.should_save = True
        return control

    def restore_best(self, final_step: int, reload_base: Any) -> Any:
        """The model to publish: the best evaluated one (the base model when step 0 won). `reload_base()`
        loads the base model again; returns the model to save."""
        import torch

        best = self.selection.best_step
        if best is None or best == final_step:
            return self.model
        if best == 0:
            log.info("no evaluation beat the base model: publishing the base model")
            return reload_base()
        saved = torch.load(self.best_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(saved["state"])
        log.info("publishing the best model, from step %s", best)
        return self.model


def eval_interval(steps: int, legacy_steps: int, steps_per_epoch: int) -> int:
    """evaluation.steps, else the older evaluationSteps, else once per epoch."""
    return steps or legacy_steps or max(1, steps_per_epoch)


def mine_negatives(dataset: Any, model: Any, corpus: list[str], spec: HardNegativesSpec) -> Any:
    """(anchor, positive, negative_1..n) with hard negatives the base model ranks high, below the positive's
    similarity minus the margin (sentence_transformers.util.mine_hard_negatives)."""
    from sentence_transformers.util import mine_hard_negatives

    return mine_hard_negatives(
        dataset,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=corpus,
        range_max=max(spec.range_max, spec.count),
        absolute_margin=spec.margin,
        num_negatives=spec.count,
        sampling_strategy="top",
        output_format="n-tuple",
        batch_size=64,
        verbose=False,
    )
