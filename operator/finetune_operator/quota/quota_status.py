"""TrainingQuota.status from an admission pass. Pure; clock injected."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finetune_operator.api.common import Condition
from finetune_operator.api.trainingquota import TrainingQuota, TrainingQuotaStatus, UsageItem

from .admission import AdmissionResult, QuotaOutcome


def usage_summary(outcome: QuotaOutcome) -> str:
    """Usage against limits in one string, e.g. ``jobs 2/4, nvidia.com/gpu 3/4``."""
    if not outcome.usage:
        return "unlimited"
    return ", ".join(item.render() for item in outcome.usage)


def quota_status(quota: TrainingQuota, result: AdmissionResult, now: datetime) -> TrainingQuotaStatus:
    """The status of one quota after a pass; keeps the Ready condition's transition time when unchanged."""
    outcome = result.quotas.get(quota.metadata.name) or QuotaOutcome(quota.metadata.name, (), (), ())
    previous = quota.status.conditions if quota.status is not None and quota.status.conditions else []
    saturated = [item.label for item in outcome.usage if item.used >= item.limit]
    if outcome.queued:
        message = f"{len(outcome.queued)} job(s) queued"
        if saturated:
            message += "; at limit: " + ", ".join(saturated)
    elif saturated:
        message = "at limit: " + ", ".join(saturated)
    else:
        message = "admitting jobs"
    ready = _condition(previous, "Ready", "True", "UsageComputed", message, now, quota.metadata.generation)
    return TrainingQuotaStatus(
        usage=[UsageItem(name=i.key, used=i.used, limit=i.limit) for i in outcome.usage],
        usage_summary=usage_summary(outcome),
        admitted_jobs=len(outcome.admitted),
        queued_jobs=len(outcome.queued),
        conditions=[ready],
        observed_generation=quota.metadata.generation,
        last_update_time=now,
    )


def status_changed(old: TrainingQuotaStatus | None, new: TrainingQuotaStatus) -> bool:
    """Whether writing ``new`` changes anything but the update time (to skip no-op writes)."""
    if old is None:
        return True
    return _essence(old) != _essence(new)


def _essence(status: TrainingQuotaStatus) -> dict[str, Any]:
    data = status.to_json()
    data.pop("lastUpdateTime", None)
    for cond in data.get("conditions", []):
        cond.pop("lastTransitionTime", None)
    return data


def _condition(
    previous: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> Condition:
    old = next((c for c in previous if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,  # type: ignore[arg-type]
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
