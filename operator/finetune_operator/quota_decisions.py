"""Pure helpers of the quota controller: which FinetuneJob bodies hold or may give back capacity, and the quota
core's decisions in the handlers' admission-hook format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import admission as hook
from .quota import ADMITTED_AT, REASON_INACTIVE, AdmissionDecision, AdmissionResult, Verdict, is_admitted


def holds_capacity(body: Mapping[str, Any]) -> bool:
    """Whether a FinetuneJob body holds quota capacity: admitted, not finished, suspended or deleting."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return (
        is_admitted(body)
        and not meta.get("deletionTimestamp")
        and status.get("phase") not in ("Succeeded", "Failed", "Suspended")
        and not ((body.get("spec") or {}).get("runPolicy") or {}).get("suspend")
    )


def releasable(body: Mapping[str, Any]) -> bool:
    """Suspended (spec or phase) and still carrying the admission annotation."""
    meta = body.get("metadata") or {}
    suspended = (body.get("status") or {}).get("phase") == "Suspended" or bool(
        ((body.get("spec") or {}).get("runPolicy") or {}).get("suspend")
    )
    return suspended and bool((meta.get("annotations") or {}).get(ADMITTED_AT))


def drop_admissions(result: AdmissionResult, uids: set[str]) -> AdmissionResult:
    decisions = dict(result.decisions)
    for uid in uids:
        old = decisions[uid]
        decisions[uid] = AdmissionDecision(
            uid=old.uid,
            namespace=old.namespace,
            name=old.name,
            verdict=Verdict.SKIPPED,
            reason=REASON_INACTIVE,
            message="the job changed during admission; deciding again",
            quotas=old.quotas,
        )
    return AdmissionResult(
        decisions=decisions, quotas=result.quotas, releases=result.releases, next_check=result.next_check
    )


def to_hook_decision(decision: AdmissionDecision) -> hook.AdmissionDecision:
    """The quota core's decision in the handlers' hook format."""
    if decision.admitted:
        return hook.AdmissionDecision(
            admitted=True, reason="Admitted", message=decision.message, admitted_by=list(decision.quotas)
        )
    if decision.verdict == Verdict.SKIPPED:
        if decision.reason == REASON_INACTIVE:
            return hook.AdmissionDecision(admitted=False, reason="Suspended", message=decision.message)
        return hook.AdmissionDecision(admitted=True, reason="Admitted", message=decision.message)
    return hook.AdmissionDecision(
        admitted=False,
        reason=decision.reason,
        message=decision.message,
        queue_position=decision.queue_position,
        admitted_by=[],
    )
