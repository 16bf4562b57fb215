"""The dataset-generation stage (spec.dataset.generate): train/validation sets generated below
`<output>/dataset`, resumable from the generation's state file, stopped (state saved) on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from finetune_operator.api.finetunejob import GenerateSpec
from finetune_operator.api.trainerconfig import TrainerConfig

from .checkpoints import Interrupted, StopFlag
from .data import s3_storage_options
from .locations import ConfigError
from .progress import Reporter

if TYPE_CHECKING:
    from .generate import GenerationResult

T = TypeVar("T")


def generate_spec(cfg: TrainerConfig) -> GenerateSpec | None:
    return cfg.spec.dataset.generate if cfg.spec.dataset is not None else None


def generation_storage_options(cfg: TrainerConfig) -> dict[str, Any] | None:
    """The S3 options data loading uses, when generation touches s3:// (documents or output)."""
    if any(loc.startswith("s3://") for loc in (cfg.output_dir, *cfg.documents)):
        return s3_storage_options(cfg.s3) or None
    return None


async def _until_stopped(coro: Coroutine[Any, Any, T], stop: StopFlag, poll: float = 0.2) -> T:
    """Await `coro`; on SIGTERM cancel it (generation saves its state when cancelled) and raise Interrupted."""
    task = asyncio.ensure_future(coro)
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll)
        if done:
            return task.result()
        if stop:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise Interrupted(0, "dataset generation stopped; its state is saved")


def generate_stage(cfg: TrainerConfig, reporter: Reporter, stop: StopFlag) -> GenerationResult:
    """Generate train/validation datasets below `<output>/dataset` (resuming from its state file)."""
    from .generate import generate_dataset, read_api_key

    gen = generate_spec(cfg)
    if gen is None:
        raise ConfigError("spec.dataset.generate: not set")
    if not cfg.documents:
        raise ConfigError("documents: no resolved document locations for spec.dataset.generate")

    def on_progress(done: int, total: int) -> None:
        pct = min(100, done * 100 // total) if total else 100
        reporter.report(
            {"step": 0, "stage": "generate", "percent": pct, "summary": f"generate: {done}/{total} chunks"}
        )

    reporter.report({"step": 0, "stage": "generate"}, force=True)
    res = asyncio.run(
        _until_stopped(
            generate_dataset(
                gen,
                cfg.documents,
                f"{cfg.output_dir.rstrip('/')}/dataset",
                read_api_key(),
                seed=cfg.spec.seed,
                storage_options=generation_storage_options(cfg),
                on_progress=on_progress,
            ),
            stop,
        )
    )
    reporter.report({"step": 0, "stage": "generate", "percent": 100}, force=True)
    return res
