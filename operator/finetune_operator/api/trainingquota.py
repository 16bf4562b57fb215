"""The TrainingQuota API (finetune.dev/v1alpha1, cluster-scoped)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DURATION,
    MAX_MESSAGE,
    MAX_QUALIFIED_NAME,
    MAX_QUANTITY,
    Condition,
    KubeModel,
    LabelSelector,
    ObjectMetaLite,
    parse_duration,
)

MAX_LIMITS = 16  # entries of each limit list

KIND = "TrainingQuota"
PLURAL = "trainingquotas"


class GpuLimit(KubeModel):
    """GPUs of one extended resource name, summed over admitted in-cluster jobs."""

    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=MAX_QUALIFIED_NAME,
        pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$",
        description="Extended resource name, e.g. nvidia.com/gpu.",
    )
    count: int = Field(ge=0, description="Most GPUs admitted at once.")


class TokenBudget(KubeModel):
    """Hosted-provider trained tokens per rolling window."""

    provider: Literal["openai", "gradient", "any"] = Field(
        default="any", description="Which hosted engine counts."
    )
    tokens: int = Field(ge=0, description="Most trained tokens in any window.")
    window: str = Field(
        default="24h",
        max_length=MAX_QUANTITY,
        pattern=DURATION,
        description="Rolling window, e.g. 24h or 30d.",
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("window must be positive")
        return value


class GpuHoursBudget(KubeModel):
    """GPU-hours per rolling window."""

    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=MAX_QUALIFIED_NAME,
        pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$",
        description="Extended resource name.",
    )
    hours: float = Field(ge=0, description="Most GPU-hours in any window.")
    window: str = Field(
        default="24h",
        max_length=MAX_QUANTITY,
        pattern=DURATION,
        description="Rolling window, e.g. 24h or 7d.",
    )


class QuotaLimits(KubeModel):
    """Limits; unset means unlimited. A job is admitted only when every covering quota has room."""

    max_jobs: int | None = Field(default=None, ge=0, description="Most admitted, unfinished jobs at once.")
    gpus: list[GpuLimit] | None = Field(
        default=None, max_length=MAX_LIMITS, description="GPU limits per resource name."
    )
    hosted_tokens: list[TokenBudget] | None = Field(
        default=None, max_length=MAX_LIMITS, description="Hosted trained-token budgets."
    )
    gpu_hours: list[GpuHoursBudget] | None = Field(
        default=None, max_length=MAX_LIMITS, description="GPU-hour budgets."
    )

    @model_validator(mode="after")
    def _unique_resources(self) -> QuotaLimits:
        names = [g.resource_name for g in self.gpus or []]
        if len(names) != len(set(names)):
            raise ValueError("gpus: each resourceName may appear once")
        return self


class TrainingQuotaSpec(KubeModel):
    """Which namespaces a quota covers and its limits."""

    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces covered (empty selects all)."
    )
    limits: QuotaLimits = Field(default_factory=QuotaLimits, description="The limits.")


class UsageItem(KubeModel):
    """Usage of one limit."""

    name: str = Field(
        max_length=512, description="The limit, e.g. jobs, gpus/nvidia.com/gpu, hostedTokens/any/24h."
    )
    used: float = Field(description="Current usage.")
    limit: float = Field(description="The limit.")


class TrainingQuotaStatus(KubeModel):
    """Observed usage."""

    usage: list[UsageItem] | None = Field(
        default=None, max_length=1 + 3 * MAX_LIMITS, description="Usage per limit."
    )
    usage_summary: str | None = Field(
        default=None, max_length=MAX_MESSAGE, description="Usage against limits, for printer columns."
    )
    admitted_jobs: int | None = Field(default=None, ge=0, description="Admitted unfinished jobs covered.")
    queued_jobs: int | None = Field(default=None, ge=0, description="Jobs waiting for this quota.")
    conditions: list[Condition] | None = Field(default=None, max_length=16, description="Conditions (Ready).")
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    last_update_time: datetime | None = Field(default=None, description="When usage was last computed.")


class TrainingQuota(KubeModel):
    """Cluster-wide limits on concurrent finetunes, GPUs and hosted-API trained tokens."""

    model_config = KubeModel.model_config | {"extra": "ignore"}

    api_version: Literal["finetune.dev/v1alpha1"] = Field(
        default="finetune.dev/v1alpha1", description="finetune.dev/v1alpha1"
    )
    kind: Literal["TrainingQuota"] = Field(default="TrainingQuota", description="TrainingQuota")
    metadata: ObjectMetaLite = Field(default_factory=ObjectMetaLite, description="Standard object metadata.")
    spec: TrainingQuotaSpec = Field(default_factory=TrainingQuotaSpec, description="Desired limits.")
    status: TrainingQuotaStatus | None = Field(default=None, description="Observed usage.")
