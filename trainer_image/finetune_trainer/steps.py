"""The trainer's numbered steps: fetch data -> validate data -> load model -> evaluate before -> train
-> evaluate after -> save model -> write result."""

from __future__ import annotations

import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from finetune_operator.api.trainerconfig import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    PVC_MOUNT,
    TrainerConfig,
)

from .checkpoints import Interrupted, StopFlag
from .context import Engine, TrainContext
from .data import DatasetError, EmbeddingQADataset, load_dataset, split_dataset, validate_dataset
from .progress import JsonlSink, Reporter, Sink, StatusSink, TqdmSink

log = logging.getLogger(__name__)

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


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _fs(uri: str, cfg: TrainerConfig) -> Any:
    import fsspec

    opts: dict[str, Any] = {}
    if cfg.s3 is not None and (cfg.s3.endpoint_url or cfg.s3.region):
        opts["client_kwargs"] = {
            k: v for k, v in {"endpoint_url": cfg.s3.endpoint_url, "region_name": cfg.s3.region}.items() if v
        }
    return fsspec.core.url_to_fs(uri, **opts)


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
    text = json.dumps(result, separators=(",", ":"))
    while len(text.encode()) > MAX_RESULT_BYTES and result.get("checkpoints"):
        result["checkpoints"] = result["checkpoints"][1:]
        text = json.dumps(result, separators=(",", ":"))
    if len(text.encode()) > MAX_RESULT_BYTES and "message" in result:
        result["message"] = str(result["message"])[:3000]
        text = json.dumps(result, separators=(",", ":"))
    if out is not None:
        (out.local / "result.json").write_text(text + "\n", encoding="utf-8")
        try:
            out.upload("result.json")
        except Exception:
            log.warning("uploading result.json failed", exc_info=True)
    if cfg.result_path:
        try:
            Path(cfg.result_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write the termination message %s: %s", cfg.result_path, exc)


def resolve_location(uri: str) -> str:
    """pvc://CLAIM/PATH -> the mounted path; other locations unchanged."""
    if uri.startswith("pvc://"):
        return f"{PVC_MOUNT}/{uri.removeprefix('pvc://')}"
    return uri


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


def make_engine(cfg: TrainerConfig, ctx: TrainContext) -> Engine:
    eng = cfg.spec.engine
    if eng.sentence_transformers is not None:
        from .engine_st import SentenceTransformersRunner

        return SentenceTransformersRunner(ctx, eng.sentence_transformers)
    if eng.adapter is not None:
        from .engine_adapter import AdapterRunner

        cont = fetch_adapter(eng.adapter.continue_from, cfg) if eng.adapter.continue_from else None
        return AdapterRunner(ctx, eng.adapter, cont)
    raise DatasetError("spec.engine: the trainer runs only the sentenceTransformers and adapter engines")


def make_reporter(cfg: TrainerConfig, out: Output, progress_bar: bool) -> Reporter:
    sinks: list[Sink] = [JsonlSink(out.local / "progress.jsonl")]
    if cfg.report.api_server:
        sinks.append(StatusSink(cfg.report, cfg.job))
    if progress_bar:
        sinks.append(TqdmSink())
    return Reporter(sinks, cfg.report.interval_seconds)


def load_data(cfg: TrainerConfig) -> tuple[EmbeddingQADataset, EmbeddingQADataset]:
    if not cfg.train:
        raise DatasetError("train: no training data location in the trainer config")
    train = load_dataset(cfg.train, cfg.s3)
    if cfg.validation:
        return train, load_dataset(cfg.validation, cfg.s3)
    validate_dataset(train, "train")
    frac = cfg.spec.dataset.validation_split if cfg.spec.dataset is not None else 0.2
    frac = frac if 0 < frac < 1 else 0.2
    log.info("no validation set given: holding out %.0f%% of the training queries", frac * 100)
    return split_dataset(train, frac, cfg.spec.seed)


def run(cfg: TrainerConfig, progress_bar: bool = False, stop: StopFlag | None = None) -> int:
    """Run all steps; return the process exit code."""
    stop = stop if stop is not None else StopFlag()
    out: Output | None = None
    t_start = time.monotonic()

    def step(i: int) -> None:
        if stop and i != 4:
            raise Interrupted(0)
        log.info("step %d/%d: %s", i + 1, len(STEPS), STEPS[i])

    try:
        out = Output(cfg)
        reporter = make_reporter(cfg, out, progress_bar)
        step(0)
        reporter.report({"step": 0, "stage": "data"}, force=True)
        train, val = load_data(cfg)
        step(1)
        tr_rep, va_rep = validate_dataset(train, "train"), validate_dataset(val, "validation")
        log.info("train: %s; validation: %s", tr_rep.model_dump(), va_rep.model_dump())
        out.download_state()
        ctx = TrainContext(
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
        step(2)
        reporter.report({"step": 0, "stage": "load model"}, force=True)
        engine.prepare()
        step(3)
        reporter.report({"step": 0, "stage": "evaluate"}, force=True)
        before = engine.evaluate(trained=False)
        log.info("before: %s", before)
        step(4)
        outcome = engine.train()
        step(5)
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
        step(6)
        reporter.report(
            {"step": outcome.steps, "total_steps": outcome.total_steps, "stage": "save"}, force=True
        )
        model_dir = out.local / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        engine.save(model_dir)
        _artifacts(out.local, outcome.losses, before, after, engine.model_format)
        step(7)
        result = {
            "status": "succeeded",
            "model": {
                "storageUri": f"{cfg.output_uri.rstrip('/')}/model",
                "format": engine.model_format,
                "baseModel": engine.base_model,
            },
            "metrics": {"before": before, "after": after},
            "trainLoss": outcome.train_loss,
            "steps": outcome.steps,
            "wallSeconds": round(outcome.wall_seconds, 3),
            "samplesPerSecond": round(outcome.samples / outcome.wall_seconds, 3)
            if outcome.wall_seconds
            else 0.0,
            "peakRssBytes": peak_rss_bytes(),
            "checkpoints": [
                {"step": c["step"], "uri": f"{cfg.output_uri.rstrip('/')}/{c['uri']}"}
                for c in ctx.checkpoints
            ],
            "dataset": {
                "trainQueries": len(train.queries),
                "validationQueries": len(val.queries),
                "corpusSize": len(set(train.corpus) | set(val.corpus)),
            },
        }
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
    except DatasetError as exc:
        print(f"invalid: {exc.message}", file=sys.stderr)
        write_result(cfg, out, {"status": "invalid", "message": exc.message})
        return EXIT_INVALID
    except Interrupted as exc:
        log.warning("%s", exc)
        write_result(cfg, out, {"status": "interrupted", "message": str(exc), "steps": exc.step})
        return EXIT_INTERRUPTED


def _artifacts(
    path: Path, losses: list[tuple[int, float]], before: dict[str, Any], after: dict[str, Any], fmt: str
) -> None:
    from .artifacts import write_plot, write_tensorboard

    try:
        write_tensorboard(path / "tensorboard", losses, before, after)
        write_plot(
            path / "training.png",
            losses,
            before,
            after,
            f"{fmt}: MRR@10 {before['mrrAt10']:.3f} -> {after['mrrAt10']:.3f}",
        )
    except Exception:
        log.warning("writing TensorBoard logs / plot failed", exc_info=True)
