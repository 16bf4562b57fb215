"""What result.json says about validation-driven selection: the best step, the validation curve, whether the
published model beats its base on validation (`metrics.modelImproved`), and where validation came from."""

from __future__ import annotations

from typing import Any

from .context import TrainOutcome

METRIC_NAMES = {
    "mrrAt10": "MRR@10",
    "ndcgAt10": "NDCG@10",
    "hitRateAt1": "hit rate@1",
    "hitRateAtK": "hit rate@k",
    "loss": "assistant-token loss",
    "preferenceMargin": "preference margin",
}
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})  # the llm engine's metrics


def improved(metric: str, before: float, after: float) -> bool:
    return after < before if metric in LOWER_IS_BETTER else after > before


def improvement_message(metric: str, before: float, after: float, best_step: int | None, steps: int) -> str:
    name = METRIC_NAMES.get(metric, metric)
    if improved(metric, before, after):
        best = f", best at step {best_step}" if best_step is not None else ""
        return f"validation {name} {before:.4f} -> {after:.4f} ({after - before:+.4f}){best}"
    if best_step is None:  # an engine without model selection (llm) publishes the trained model
        return (
            f"the trained model does not beat the base model: validation {name} {before:.4f} -> {after:.4f}"
        )
    return (
        f"no evaluation beat the base model: validation {name} {before:.4f} -> {after:.4f} "
        f"(best at step {best_step} of {steps}); the best model evaluated is published"
        + (" (the base model)" if best_step == 0 else "")
    )


def apply_selection(
    result: dict[str, Any],
    outcome: TrainOutcome,
    before: dict[str, Any],
    after: dict[str, Any],
    held_out: bool,
) -> None:
    """Merge into the result: metrics.{bestStep, selectionMetric, stoppedEarly, validationCurve,
    modelImproved, improvementMessage}, dataset.validationSource, and the engine's figures (frozenPass)."""
    sel = dict(outcome.selection or {})
    metric = str(sel.get("selectionMetric") or "mrrAt10")
    b, a = float(before.get(metric, 0.0)), float(after.get(metric, 0.0))
    result.setdefault("metrics", {}).update(
        {
            **sel,
            "selectionMetric": metric,
            "modelImproved": improved(metric, b, a),
            "improvementMessage": improvement_message(metric, b, a, sel.get("bestStep"), outcome.steps),
        }
    )
    result.setdefault("dataset", {})["validationSource"] = "heldOutByDocument" if held_out else "given"
    result.update(outcome.extra)
