"""Validation-driven training of the in-cluster engines: when to evaluate, what to keep, when to stop; and the
hard negatives mined with the base model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import KubeModel

EvaluationMetric = Literal["mrrAt10", "ndcgAt10", "hitRateAt1", "hitRateAtK"]


class EvaluationSpec(KubeModel):
    """Evaluation on the validation set during training. The base model (step 0) is evaluated first; the best
    evaluated model is the one published, so a job never publishes a model worse than its base (when no
    evaluation beats step 0, the base model itself is published and `ModelImproved` is False)."""

    steps: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Evaluate every N optimizer steps; 0: once per epoch (and at the last step).",
    )
    patience: int = Field(
        default=3,
        ge=0,
        le=10_000,
        description="Stop early after this many evaluations in a row without improvement (0: never stop early).",
    )
    metric: EvaluationMetric = Field(
        default="mrrAt10", description="The validation metric that picks the best model."
    )
    min_delta: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="An evaluation improves on the best so far only when its metric is higher by more than this.",
    )
    keep_best: bool = Field(
        default=True,
        description="Publish the best evaluated model (step 0 included); false: publish the last one.",
    )


class HardNegativesSpec(KubeModel):
    """Hard negatives mined with the base model (sentence_transformers.util.mine_hard_negatives): for each
    training query, corpus documents the base model ranks high that are not its relevant ones, added to the
    in-batch negatives of the ranking loss."""

    count: int = Field(
        default=0, ge=0, le=64, description="Hard negatives per training pair (0: in-batch negatives only)."
    )
    margin: float = Field(
        default=0.1,
        ge=-1,
        le=1,
        description="Keep a candidate only if its similarity to the query is below the positive's minus this "
        "margin (filters likely false negatives).",
    )
    range_max: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Candidates are taken from the base model's top rangeMax documents per query.",
    )
