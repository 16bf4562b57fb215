"""The result JSON of a run: the model, metrics, checkpoints, status.dataset and the generation's counts, with
the keys the operator's status derivation reads (finetune_operator.status.sections)."""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING, Any, Protocol

from finetune_operator.api.trainerconfig import TrainerConfig

from .context import TrainOutcome
from .data import EmbeddingQADataset
from .llm_data import ChatData
from .locations import user_facing

if TYPE_CHECKING:
    from .generate import GenerationResult

TrainData = EmbeddingQADataset | ChatData  # what an engine trains on (llm: ChatData)


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


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
