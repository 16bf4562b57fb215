"""The trainer's numbered steps: fetch data -> validate data -> load model -> evaluate before -> train
-> evaluate after -> save model -> write result (after generating the dataset, when spec.dataset.generate is set).
The output I/O is in output.py, the result JSON in result.py, the generation stage in generate_stage.py."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_operator.api.trainerconfig import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    TrainerConfig,
)

from . import distributed
from .checkpoints import Interrupted, StopFlag
from .context import Engine, TrainContext
from .data import (
    DatasetError,
    EmbeddingQADataset,
    load_dataset,
    validate_dataset,
)
from .generate_stage import generate_spec, generate_stage
from .llm_data import ChatData, load_chat_data
from .locations import ConfigError
from .output import Output, fetch_adapter, write_result
from .progress import JsonlSink, Reporter, Sink, StatusSink, TqdmSink
from .result import TrainData, build_result, dataset_result, generation_result

if TYPE_CHECKING:
    from .generate import GenerationResult

log = logging.getLogger(__name__)

GENERATE = "generate dataset"
TRAIN = "train"
EXIT_FAILED = 1  # a failed attempt: the operator retries it (generation resumes from its state file)
STEPS = (
    "fetch data",
    "validate data",
    "load model",
    "evaluate before",
    "train",
    "evaluate after",
    "save model",
    "write result",
)


def make_engine(cfg: TrainerConfig, ctx: TrainContext[Any]) -> Engine:
    eng = cfg.spec.engine
    if eng.sentence_transformers is not None:
        from .engine_st import SentenceTransformersRunner

        return SentenceTransformersRunner(ctx, eng.sentence_transformers)
    if eng.adapter is not None:
        from .engine_adapter import AdapterRunner

        cont = fetch_adapter(eng.adapter.continue_from, cfg) if eng.adapter.continue_from else None
        return AdapterRunner(ctx, eng.adapter, cont)
    if eng.llm is not None:
        from .engine_llm import LlmRunner

        return LlmRunner(ctx, eng.llm)
    raise DatasetError("spec.engine: the trainer runs only the sentenceTransformers, adapter and llm engines")


def make_reporter(cfg: TrainerConfig, out: Output, progress_bar: bool) -> Reporter:
    if not distributed.is_main():  # one writer of progress and status: rank 0
        return Reporter([], cfg.report.interval_seconds)
    sinks: list[Sink] = [JsonlSink(out.local / "progress.jsonl")]
    if cfg.report.api_server:
        sinks.append(StatusSink(cfg.report, cfg.job))
    if progress_bar:
        sinks.append(TqdmSink())
    return Reporter(sinks, cfg.report.interval_seconds)


def load_train_data(cfg: TrainerConfig, generated: GenerationResult | None) -> tuple[TrainData, TrainData]:
    """The engine's train and validation data: chat/preference JSONL for llm (checked line by line as it is
    read), EmbeddingQA datasets for the embedding engines."""
    if cfg.spec.engine.llm is not None:
        return load_chat_data(cfg)
    return load_data(cfg, generated)


def validate_data(data: TrainData, name: str) -> dict[str, Any]:
    if isinstance(data, ChatData):
        return {"format": data.format, "examples": len(data)}
    return validate_dataset(data, name).model_dump()


def load_data(
    cfg: TrainerConfig, generated: GenerationResult | None = None
) -> tuple[EmbeddingQADataset, EmbeddingQADataset]:
    """Train and validation sets: the generated ones, or the configured ones; split when none is given."""
    train_loc = generated.train_path if generated is not None else cfg.train
    val_loc = generated.validation_path if generated is not None else cfg.validation
    if not train_loc:
        raise DatasetError("train: no training data location in the trainer config")
    train = load_dataset(train_loc, cfg.s3)
    if val_loc:
        return train, load_dataset(val_loc, cfg.s3)
    validate_dataset(train, "train")
    frac = cfg.spec.dataset.validation_split if cfg.spec.dataset is not None else 0.2
    frac = frac if 0 < frac < 1 else 0.2
    from .holdout import split_by_document

    tr, va, how = split_by_document(train, frac, cfg.spec.seed)
    log.info("no validation set given: held out %d of the training queries, by %s", len(va.queries), how)
    return tr, va


def plan_steps(cfg: TrainerConfig) -> tuple[str, ...]:
    """The steps this config runs: generation first when spec.dataset.generate is set."""
    gen = generate_spec(cfg)
    if gen is None:
        return STEPS
    if gen.generate_only:
        return (GENERATE, STEPS[-1])
    return (GENERATE, *STEPS)


# ---------------------------------------------------------------------------- the run


def run(cfg: TrainerConfig, progress_bar: bool = False, stop: StopFlag | None = None) -> int:
    """Run all steps; return the process exit code (0 ok, 3 invalid, 4 interrupted, 1 failed)."""
    from .generate import GenerationError

    stop = stop if stop is not None else StopFlag()
    out: Output | None = None
    t_start = time.monotonic()
    names = plan_steps(cfg)

    def step(name: str) -> None:
        if stop and name != TRAIN:
            raise Interrupted(0)
        log.info("step %d/%d: %s", names.index(name) + 1, len(names), name)

    try:
        out = Output(cfg)
        reporter = make_reporter(cfg, out, progress_bar)
        log.info("job %s/%s, attempt %d", cfg.job.namespace, cfg.job.name, cfg.attempt)
        generated: GenerationResult | None = None
        if GENERATE in names:
            step(GENERATE)
            generated = generate_stage(cfg, reporter, stop)
            if len(names) == 2:  # generateOnly: the dataset is for review, no training
                step(STEPS[-1])
                write_result(
                    cfg,
                    out,
                    {
                        "status": "succeeded",
                        "generateOnly": True,
                        "attempt": cfg.attempt,
                        "dataset": dataset_result(cfg, generated),
                        "generation": generation_result(cfg, generated),
                    },
                )
                reporter.report({"step": 0, "stage": "done", "eta_seconds": 0}, force=True)
                reporter.close()
                log.info("generation only: done in %.1fs", time.monotonic() - t_start)
                return EXIT_OK
        step("fetch data")
        reporter.report({"step": 0, "stage": "data"}, force=True)
        train, val = load_train_data(cfg, generated)
        step("validate data")
        log.info("train: %s; validation: %s", validate_data(train, "train"), validate_data(val, "validation"))
        out.download_state()
        ctx = TrainContext[Any](
            train=train,
            validation=val,
            work_dir=out.local,
            reporter=reporter,
            stop=stop,
            seed=cfg.spec.seed,
            checkpoint_steps=cfg.checkpoint_steps,
            keep_checkpoints=cfg.keep_checkpoints,
            on_checkpoint=out.sync_checkpoint,
        )
        engine = make_engine(cfg, ctx)
        step("load model")
        reporter.report({"step": 0, "stage": "load model"}, force=True)
        engine.prepare()
        step("evaluate before")
        reporter.report({"step": 0, "stage": "evaluate"}, force=True)
        before = engine.evaluate(trained=False) if distributed.is_main() else {}
        log.info("before: %s", before)
        step(TRAIN)
        outcome = engine.train()
        if not distributed.is_main():  # rank 0 evaluates, saves and writes the result
            log.info("rank %d: training done", distributed.rank())
            distributed.shutdown()
            return EXIT_OK
        step("evaluate after")
        reporter.report(
            {
                "step": outcome.steps,
                "total_steps": outcome.total_steps,
                "stage": "evaluate",
                "loss": outcome.train_loss,
            },
            force=True,
        )
        after = engine.evaluate(trained=True)
        log.info("after: %s", after)
        step("save model")
        reporter.report(
            {"step": outcome.steps, "total_steps": outcome.total_steps, "stage": "save"}, force=True
        )
        model_dir = out.local / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        engine.save(model_dir)
        _artifacts(out.local, outcome.losses, before, after, engine.model_format, outcome.selection)
        step("write result")
        result = build_result(cfg, engine, outcome, before, after, ctx.checkpoints, generated, train, val)
        out.upload()
        write_result(cfg, out, result)
        reporter.report(
            {
                "step": outcome.steps,
                "total_steps": outcome.total_steps,
                "stage": "done",
                "loss": outcome.train_loss,
                "eta_seconds": 0,
            },
            ctx.checkpoints,
            force=True,
        )
        reporter.close()
        log.info("done in %.1fs", time.monotonic() - t_start)
        return EXIT_OK
    except (DatasetError, ConfigError) as exc:
        message = exc.message if isinstance(exc, DatasetError) else str(exc)
        print(f"invalid: {message}", file=sys.stderr)
        write_result(cfg, out, {"status": "invalid", "attempt": cfg.attempt, "message": message})
        return EXIT_INVALID
    except GenerationError as exc:
        print(f"dataset generation failed: {exc.message}", file=sys.stderr)
        status = "failed" if exc.retryable else "invalid"
        write_result(cfg, out, {"status": status, "attempt": cfg.attempt, "message": exc.message})
        return EXIT_FAILED if exc.retryable else EXIT_INVALID
    except Interrupted as exc:
        log.warning("%s", exc)
        write_result(
            cfg,
            out,
            {"status": "interrupted", "attempt": cfg.attempt, "message": str(exc), "steps": exc.step},
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.exception("the trainer failed")
        write_result(
            cfg, out, {"status": "failed", "attempt": cfg.attempt, "message": f"{type(exc).__name__}: {exc}"}
        )
        return EXIT_FAILED


def _artifacts(
    path: Path,
    losses: list[tuple[int, float]],
    before: dict[str, Any],
    after: dict[str, Any],
    fmt: str,
    selection: dict[str, Any] | None = None,
) -> None:
    from .artifacts import write_plot, write_tensorboard

    try:
        write_tensorboard(path / "tensorboard", losses, before, after, selection)
        write_plot(
            path / "training.png",
            losses,
            before,
            after,
            _plot_title(fmt, before, after),
            selection,
        )
    except Exception:
        log.warning("writing TensorBoard logs / plot failed", exc_info=True)


def _plot_title(fmt: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    if "mrrAt10" in before and "mrrAt10" in after:
        return f"{fmt}: MRR@10 {before['mrrAt10']:.3f} -> {after['mrrAt10']:.3f}"
    return f"{fmt}: validation loss {before.get('loss', 0.0):.3f} -> {after.get('loss', 0.0):.3f}"
