"""The data sections of a FinetuneJob status (progress, checkpoints, metrics, model, dataset), taken from
what the trainer reported and from the attempts' results. Never raises on odd input: a section that does
not validate is left out.

Result keys read (camelCase or snake_case): ``metrics.before`` / ``metrics.after`` (or top-level
``before`` / ``after``), ``trainLoss``, ``samplesPerSecond``, ``wallSeconds``, ``trainedTokens``,
``storageUri`` (or ``modelUri`` / ``modelDir`` / ``modelPath`` / ``model.storageUri``), ``format``,
``baseModel``, ``providerModelId`` (or ``fineTunedModel``), ``adapterId``, ``dataset``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from ..api.finetunejob import FinetuneJob, engine_summary
from ..api.jobstatus import (
    CheckpointRef,
    CurvePoint,
    DatasetStatus,
    MetricsStatus,
    ModelRef,
    Progress,
    RetrievalMetrics,
)
from ..builders.mounts import resolve_output

MAX_CHECKPOINTS = 10
MAX_CURVE_POINTS = 30
SELECTION_KEYS = ("bestStep", "selectionMetric", "stoppedEarly", "modelImproved")
M = TypeVar("M", bound=BaseModel)

_FORMATS = {
    "sentenceTransformers": "sentence-transformers",
    "adapter": "adapter",
    "openai": "openai",
    "gradient": "gradient",
    "llm": "peft-lora",
}


def camel(data: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys in camelCase."""
    return {to_camel(k) if "_" in k else k: v for k, v in data.items()}


def model_or_none(cls: type[M], data: Any) -> M | None:
    """Validate `data` into `cls`, dropping unknown keys; None if it still does not validate."""
    if not isinstance(data, Mapping):
        return None
    fields = {info.alias or name for name, info in cls.model_fields.items()}
    clean = {k: v for k, v in camel(data).items() if k in fields and v is not None}
    try:
        return cls.model_validate(clean)
    except ValidationError:
        return None


def derive_progress(candidates: Iterable[Mapping[str, Any] | None]) -> Progress | None:
    """The most advanced report (highest step, later report wins a tie), with percent and summary."""
    best: Progress | None = None
    for cand in candidates:
        prog = model_or_none(Progress, cand)
        if prog is not None and (best is None or prog.step >= best.step):
            best = prog
    if best is None:
        return None
    total = best.total_steps
    if total:
        pct = min(100, best.step * 100 // total)
        return best.model_copy(update={"percent": pct, "summary": f"{best.step}/{total} ({pct}%)"})
    return best.model_copy(update={"summary": f"{best.step}"})


def derive_checkpoints(
    status_checkpoints: Mapping[str, Any] | None, attempt_lists: Iterable[Iterable[Mapping[str, Any]]]
) -> dict[str, Any] | None:
    """Newest MAX_CHECKPOINTS checkpoints by step (one per step, the later report wins) and the latest."""
    by_step: dict[int, CheckpointRef] = {}
    raw: list[Any] = []
    if isinstance(status_checkpoints, Mapping):
        raw += list(status_checkpoints.get("items") or [])
        if status_checkpoints.get("latest"):
            raw.append(status_checkpoints["latest"])
    for lst in attempt_lists:
        raw += list(lst)
    for item in raw:
        ref = model_or_none(CheckpointRef, item)
        if ref is not None:
            by_step[ref.step] = ref
    if not by_step:
        return None
    items = [by_step[s] for s in sorted(by_step)][-MAX_CHECKPOINTS:]
    return {"latest": items[-1], "items": items}


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def derive_metrics(result: Mapping[str, Any] | None, trained_tokens: int | None) -> MetricsStatus | None:
    res = camel(result or {})
    inner = res.get("metrics") if isinstance(res.get("metrics"), Mapping) else {}
    assert isinstance(inner, Mapping)
    merged = {**res, **camel(inner)}
    before = model_or_none(RetrievalMetrics, _first(merged, "before", "metricsBefore"))
    after = model_or_none(RetrievalMetrics, _first(merged, "after", "metricsAfter"))
    tokens = _first(merged, "trainedTokens") if trained_tokens is None else trained_tokens
    out = (
        model_or_none(
            MetricsStatus,
            {
                "trainLoss": merged.get("trainLoss"),
                "samplesPerSecond": merged.get("samplesPerSecond"),
                "wallSeconds": merged.get("wallSeconds"),
                "trainedTokens": tokens,
                **{k: merged.get(k) for k in SELECTION_KEYS},
            },
        )
        or MetricsStatus()
    )
    raw_curve = merged.get("validationCurve")
    points = raw_curve if isinstance(raw_curve, list) else []
    curve = [p for p in (model_or_none(CurvePoint, x) for x in points) if p is not None]
    out = out.model_copy(
        update={"before": before, "after": after, "validation_curve": curve[-MAX_CURVE_POINTS:] or None}
    )
    return out if out.to_json() else None


def derive_model(job: FinetuneJob, result: Mapping[str, Any] | None, succeeded: bool) -> ModelRef | None:
    res = camel(result or {})
    if res.get("generateOnly"):
        return (
            None  # the job stopped after dataset generation: there is no model (status.dataset has the data)
        )
    nested = camel(res["model"]) if isinstance(res.get("model"), Mapping) else {}
    merged = {**res, **nested}
    storage = _first(merged, "storageUri", "modelUri", "modelDir", "modelPath")
    in_cluster = job.spec.engine.in_cluster
    if in_cluster and job.spec.output is not None:
        output_dir, output_uri = resolve_output(job)
        if isinstance(storage, str) and storage.startswith(output_dir):
            storage = output_uri + storage[len(output_dir) :]
        if storage is None and succeeded:
            storage = output_uri  # the trainer saves below the job's own output directory
    summary = engine_summary(job.spec)
    provider = _first(merged, "providerModelId", "fineTunedModel")
    adapter_id = merged.get("adapterId")
    if not (succeeded or storage or provider or adapter_id):
        return None
    name = storage or provider or adapter_id
    return model_or_none(
        ModelRef,
        {
            "storageUri": storage,
            "format": merged.get("format") or _FORMATS.get(summary["engine"]),
            "baseModel": merged.get("baseModel") or summary.get("model"),
            "providerModelId": provider,
            "adapterId": adapter_id,
            "name": name,
        },
    )


def derive_dataset(result: Mapping[str, Any] | None) -> DatasetStatus | None:
    ds = model_or_none(DatasetStatus, camel(result or {}).get("dataset"))
    return ds if ds is not None and ds.to_json() else None
