"""The trainer's numbered steps: fetch data -> validate data -> load model -> evaluate before -> train
-> evaluate after -> save model -> write result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from finetune_operator.api.finetunejob import GenerateSpec
from finetune_operator.api.trainerconfig import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    TrainerConfig,
)

from . import distributed
from .checkpoints import Interrupted, StopFlag
from .context import Engine, TrainContext, TrainOutcome
from .data import (
    DatasetError,
    EmbeddingQADataset,
    load_dataset,
    s3_storage_options,
    validate_dataset,
)
from .llm_data import ChatData, load_chat_data
from .locations import ConfigError, resolve_location, user_facing
from .progress import JsonlSink, Reporter, Sink, StatusSink, TqdmSink

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
MAX_RESULT_BYTES = 4096
T = TypeVar("T")
TrainData = EmbeddingQADataset | ChatData  # what an engine trains on (llm: ChatData)


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _fs(uri: str, cfg: TrainerConfig) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(uri, **(s3_storage_options(cfg.s3) if uri.startswith("s3://") else {}))


class Output:
    """The job's output location; s3:// outputs are written locally, then uploaded."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.remote = cfg.output_dir if cfg.output_dir.startswith("s3://") else None
        if self.remote is None:
            self.local = Path(cfg.output_dir)
        else:
            self.local = Path(tempfile.gettempdir()) / "finetune-output" / cfg.job.namespace / cfg.job.name
        self.local.mkdir(parents=True, exist_ok=True)

    def download_state(self) -> None:
        """Fetch existing checkpoints and the embedding cache from s3 so that a new attempt resumes."""
        if self.remote is None:
            return
        fs, root = _fs(self.remote, self.cfg)
        for sub in ("checkpoints", "cache"):
            if fs.exists(f"{root}/{sub}"):
                fs.get(f"{root}/{sub}", str(self.local / sub), recursive=True)

    def upload(self, sub: str = "") -> None:
        if self.remote is None:
            return
        fs, root = _fs(self.remote, self.cfg)
        src = self.local / sub if sub else self.local
        dst = f"{root}/{sub}" if sub else root
        if src.is_dir():
            fs.put(str(src), dst, recursive=True)
        elif src.is_file():
            fs.put_file(str(src), dst)

    def sync_checkpoint(self, step: int, path: Path) -> None:
        if self.remote is None:
            return
        self.upload(f"checkpoints/{path.name}")
        fs, root = _fs(self.remote, self.cfg)
        keep = {p.name for p in (self.local / "checkpoints").iterdir()}
        for remote in fs.ls(f"{root}/checkpoints", detail=False) if fs.exists(f"{root}/checkpoints") else []:
            if remote.rstrip("/").rsplit("/", 1)[-1] not in keep:
                fs.rm(remote, recursive=True)


def write_result(cfg: TrainerConfig, out: Output | None, result: dict[str, Any]) -> None:
    """result.json in full; the termination message bounded (the llm engine's generations go first)."""
    full = json.dumps(result, separators=(",", ":"))
    text = full
    if len(text.encode()) > MAX_RESULT_BYTES and "evaluation" in result:
        result = {k: v for k, v in result.items() if k != "evaluation"}
        text = json.dumps(result, separators=(",", ":"))
    while len(text.encode()) > MAX_RESULT_BYTES and result.get("checkpoints"):
        result["checkpoints"] = result["checkpoints"][1:]
        text = json.dumps(result, separators=(",", ":"))
    if len(text.encode()) > MAX_RESULT_BYTES and "message" in result:
        result["message"] = str(result["message"])[:3000]
        text = json.dumps(result, separators=(",", ":"))
    if out is not None and distributed.is_main():  # each pod's termination message, rank 0's result.json
        (out.local / "result.json").write_text(full + "\n", encoding="utf-8")
        try:
            out.upload("result.json")
        except Exception:
            log.warning("uploading result.json failed", exc_info=True)
    if cfg.result_path:
        try:
            Path(cfg.result_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write the termination message %s: %s", cfg.result_path, exc)


def fetch_adapter(uri: str, cfg: TrainerConfig) -> Path:
    """A local dir holding config.json + pytorch_model.bin of an earlier job's adapter."""
    loc = resolve_location(uri)
    if loc.startswith("s3://"):
        fs, root = _fs(loc, cfg)
        target = Path(tempfile.mkdtemp(prefix="continue-from-"))
        fs.get(root, str(target), recursive=True)
        loc = str(target)
    path = Path(loc)
    for cand in (path / "adapter", path / "model" / "adapter", path):
        if (cand / "config.json").is_file() and (cand / "pytorch_model.bin").is_file():
            return cand
    raise DatasetError(
        f"spec.engine.adapter.continueFrom: no adapter (config.json + pytorch_model.bin) at {uri}"
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


# ---------------------------------------------------------------------------- dataset generation


def generate_spec(cfg: TrainerConfig) -> GenerateSpec | None:
    return cfg.spec.dataset.generate if cfg.spec.dataset is not None else None


def plan_steps(cfg: TrainerConfig) -> tuple[str, ...]:
    """The steps this config runs: generation first when spec.dataset.generate is set."""
    gen = generate_spec(cfg)
    if gen is None:
        return STEPS
    if gen.generate_only:
        return (GENERATE, STEPS[-1])
    return (GENERATE, *STEPS)


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


_GENERATION_COUNTS = {
    "documents": "documents",
    "chunks": "chunks",
    "chunks_resumed": "chunksResumed",
    "chunks_short": "chunksShort",
    "questions": "questions",
    "requests": "requests",
    "failed_requests": "failedRequests",
    "retries": "retries",
    "prompt_tokens": "promptTokens",
    "completion_tokens": "completionTokens",
    "total_tokens": "totalTokens",
    "wall_seconds": "wallSeconds",
}


def _dataset_uri(cfg: TrainerConfig, path: str | None) -> str | None:
    """A generated file as users see it: below output_uri + "/dataset"."""
    return (
        None
        if path is None
        else f"{cfg.output_uri.rstrip('/')}/dataset/{path.rstrip('/').rsplit('/', 1)[-1]}"
    )


def generation_result(cfg: TrainerConfig, res: GenerationResult) -> dict[str, Any]:
    """The generation's counts (requests, tokens, ...) and where its report is."""
    out = {camel: res.report[key] for key, camel in _GENERATION_COUNTS.items() if key in res.report}
    from .generate import REPORT_FILE

    out["reportUri"] = _dataset_uri(cfg, REPORT_FILE)
    return out


def dataset_result(
    cfg: TrainerConfig,
    generated: GenerationResult | None,
    train: TrainData | None = None,
    val: TrainData | None = None,
) -> dict[str, Any]:
    """status.dataset: trainUri, validationUri, trainQueries, validationQueries, corpusSize."""
    if generated is not None:
        uris = (_dataset_uri(cfg, generated.train_path), _dataset_uri(cfg, generated.validation_path))
    else:
        uris = (user_facing(cfg.train), user_facing(cfg.validation))
    if isinstance(train, ChatData) and isinstance(val, ChatData):
        counts: tuple[int | None, ...] = (len(train), len(val), None)
    elif isinstance(train, EmbeddingQADataset) and isinstance(val, EmbeddingQADataset):
        counts = (
            len(train.queries),
            len(val.queries),
            len(set(train.corpus) | set(val.corpus)),
        )
    elif generated is not None:
        rep = generated.report
        counts = (rep.get("train_queries"), rep.get("validation_queries"), rep.get("corpus"))
    else:
        counts = (None, None, None)
    keys = ("trainUri", "validationUri", "trainQueries", "validationQueries", "corpusSize")
    return {k: v for k, v in zip(keys, (*uris, *counts), strict=True) if v is not None}


class ModelInfo(Protocol):
    """What the result says about the engine's model (every Engine has it)."""

    model_format: str
    base_model: str


def build_result(
    cfg: TrainerConfig,
    engine: ModelInfo,
    outcome: TrainOutcome,
    before: dict[str, Any],
    after: dict[str, Any],
    checkpoints: list[dict[str, Any]],
    generated: GenerationResult | None,
    train: TrainData,
    val: TrainData,
) -> dict[str, Any]:
    """The result JSON of a successful run, with the keys the operator's status derivation reads
    (finetune_operator.status.sections): metrics.before/after, trainLoss, samplesPerSecond, wallSeconds,
    model.storageUri/format/baseModel, dataset.*, checkpoints."""
    base = cfg.output_uri.rstrip("/")
    result: dict[str, Any] = {
        "status": "succeeded",
        "attempt": cfg.attempt,
        "model": {
            "storageUri": "/".join(p for p in (f"{base}/model", getattr(engine, "model_subdir", "")) if p),
            "format": engine.model_format,
            "baseModel": user_facing(engine.base_model),
        },
        "metrics": {"before": before, "after": after},
        "trainLoss": outcome.train_loss,
        "steps": outcome.steps,
        "totalSteps": outcome.total_steps,
        "wallSeconds": round(outcome.wall_seconds, 3),
        "samplesPerSecond": round(outcome.samples / outcome.wall_seconds, 3) if outcome.wall_seconds else 0.0,
        "peakRssBytes": peak_rss_bytes(),
        "checkpoints": [{"step": c["step"], "uri": f"{base}/{c['uri']}"} for c in checkpoints],
        "dataset": dataset_result(cfg, generated, train, val),
    }
    if outcome.resumed_from is not None:
        result["resumedFrom"] = outcome.resumed_from
    selection_result(result, cfg, outcome, before, after, generated)
    if generated is not None:
        result["generation"] = generation_result(cfg, generated)
    return result


def selection_result(
    result: dict[str, Any],
    cfg: TrainerConfig,
    outcome: TrainOutcome,
    before: dict[str, Any],
    after: dict[str, Any],
    generated: GenerationResult | None,
) -> None:
    """Validation-driven selection into result.json: best step, curve, whether the model beat its base,
    where the validation set came from; plus the engine's own figures (frozen pass)."""
    from .selection import apply_selection

    held_out = (generated.validation_path if generated is not None else cfg.validation) is None
    apply_selection(result, outcome, before, after, held_out)


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
