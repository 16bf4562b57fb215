"""TrainingQuota admission: pure decisions over a snapshot of the cluster (no kopf, no Kubernetes client).

snapshot = Snapshot(jobs=[job_view(j, priority_classes=...) ...], quotas=[quota_view(q, ns_labels)], now=now)
result = decide(snapshot)
result.decisions[uid]       -> AdmissionDecision (Admitted / Queued + QuotaExceeded / Rejected + ExceedsQuota)
quota_status(quota, result, now) -> TrainingQuotaStatus
"""

from .admission import (
    REASON_ADMITTED,
    REASON_EXCEEDS_QUOTA,
    REASON_INACTIVE,
    REASON_KUEUE,
    REASON_QUOTA_EXCEEDED,
    AdmissionDecision,
    AdmissionResult,
    LimitUsage,
    QuotaOutcome,
    Verdict,
    admission_order,
    decide,
)
from .cache import JobCache
from .model import (
    ADMITTED_AT,
    ADMITTED_BY,
    JobView,
    QuotaView,
    Snapshot,
    format_time,
    is_admitted,
    job_view,
    job_view_from_body,
    namespace_labels,
    parse_time,
    quota_view,
    resolve_priority,
)
from .quota_status import quota_status, status_changed, usage_summary

__all__ = [
    "ADMITTED_AT",
    "ADMITTED_BY",
    "REASON_ADMITTED",
    "REASON_EXCEEDS_QUOTA",
    "REASON_INACTIVE",
    "REASON_KUEUE",
    "REASON_QUOTA_EXCEEDED",
    "AdmissionDecision",
    "AdmissionResult",
    "JobCache",
    "JobView",
    "LimitUsage",
    "QuotaOutcome",
    "QuotaView",
    "Snapshot",
    "Verdict",
    "admission_order",
    "decide",
    "format_time",
    "is_admitted",
    "job_view",
    "job_view_from_body",
    "namespace_labels",
    "parse_time",
    "quota_status",
    "quota_view",
    "resolve_priority",
    "status_changed",
    "usage_summary",
]
