"""next_action: what the handler should do now; events_for_transition: the Events of a status change;
disruption_event: the Event of an attempt ended by a disruption."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ..api.finetunejob import FinetuneJob
from ..api.jobstatus import TERMINAL_PHASES, Phase
from ..config import Settings
from . import observed as o
from .derive import check_now, deadline_at, derive_status, parse_time
from .observed import Observed

ActionKind = Literal["create_attempt", "cancel_attempt", "wait", "delete_job", "nothing"]


@dataclass(frozen=True)
class Action:
    """What to do. `attempt` for create/cancel; `not_before`: create only at or after this time;
    `requeue_after`: seconds until the handler should look again (None: on the next event or resync)."""

    kind: ActionKind
    attempt: int | None = None
    not_before: datetime | None = None
    requeue_after: float | None = None
    reason: str = ""


def backoff_delay(settings: Settings, failed_attempts: int) -> float:
    """Seconds before the next attempt after `failed_attempts` failures: base * 2**(n-1), capped."""
    if failed_attempts <= 0:
        return 0.0
    delay = settings.retry_backoff_seconds * 2.0 ** min(failed_attempts - 1, 60)
    return float(min(delay, settings.retry_backoff_max_seconds))


def _seconds(until: datetime, now: datetime) -> float:
    return max(0.0, (until - now).total_seconds())


def next_action(
    job: FinetuneJob | Mapping[str, Any], observed: Observed, settings: Settings, now: datetime
) -> Action:
    now = check_now(now)
    status = derive_status(job, observed, now)
    phase = status.get("phase")
    latest = observed.latest
    active = latest if latest is not None and latest.state in o.ACTIVE_STATES | {o.SUSPENDED} else None
    if not isinstance(job, FinetuneJob):
        return Action("nothing", reason="invalid spec")
    if phase in {p.value for p in TERMINAL_PHASES}:
        if active is not None:
            return Action("cancel_attempt", attempt=active.number, reason=f"job {phase}")
        ttl = job.spec.run_policy.ttl_seconds_after_finished
        done = parse_time(status.get("completionTime"))
        if ttl is None or done is None:
            return Action("nothing", reason=f"job {phase}")
        expires = done + timedelta(seconds=ttl)
        if now >= expires:
            return Action("delete_job", reason="ttlSecondsAfterFinished expired")
        return Action(
            "wait", requeue_after=_seconds(expires, now), reason="waiting for ttlSecondsAfterFinished"
        )
    if phase == Phase.SUSPENDED:
        if active is not None:
            return Action("cancel_attempt", attempt=active.number, reason="suspended")
        return Action("nothing", reason="suspended")
    if phase == Phase.QUEUED and active is None:
        return Action("wait", reason=str(status.get("message") or "waiting for admission"))
    deadline = deadline_at(job, observed, status)
    to_deadline = _seconds(deadline, now) if deadline is not None else None
    if active is not None:
        return Action(
            "wait", attempt=active.number, requeue_after=to_deadline, reason=f"attempt {active.state}"
        )
    if latest is not None and latest.state == o.NONE:
        return Action(
            "create_attempt",
            attempt=latest.number,
            not_before=now,
            requeue_after=0.0,
            reason="attempt not yet submitted",
        )
    if latest is None:
        if observed.admitted:
            return Action("create_attempt", attempt=1, not_before=now, requeue_after=0.0, reason="admitted")
        return Action("wait", reason=str(status.get("message") or "waiting for admission"))
    # the latest attempt ended without success and the job goes on
    if latest.disruption:
        return Action(
            "create_attempt",
            attempt=latest.number + 1,
            not_before=now,
            requeue_after=0.0,
            reason="resume after disruption",
        )
    ended = parse_time(latest.observation.finished_at) or parse_time(latest.observation.started_at)
    not_before = now
    if ended is not None:
        not_before = max(now, ended + timedelta(seconds=backoff_delay(settings, observed.failed_attempts)))
    wait = _seconds(not_before, now)
    if to_deadline is not None:
        wait = min(wait, to_deadline)
    return Action(
        "create_attempt",
        attempt=latest.number + 1,
        not_before=not_before,
        requeue_after=wait,
        reason=f"retry after {observed.failed_attempts} failed attempt(s)",
    )


_WARNING_REASONS = frozenset(
    {o.R_INVALID_SPEC, o.R_EXCEEDS_QUOTA, o.R_BACKOFF_LIMIT, o.R_INVALID_DATA, o.R_DEADLINE, o.R_RETRYING}
)


def _reason(status: Mapping[str, Any]) -> str:
    phase = status.get("phase")
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("reason") or phase or "")
    return str(phase or "")


def events_for_transition(
    old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for what changed: a phase or reason change, a new attempt, a failure."""
    old = dict(old_status or {})
    events: list[tuple[str, str, str]] = []
    new_phase, old_phase = new_status.get("phase"), old.get("phase")
    new_reason = _reason_of(new_status)
    if new_phase != old_phase or new_reason != _reason_of(old):
        etype = "Warning" if new_reason in _WARNING_REASONS or new_phase == Phase.FAILED else "Normal"
        events.append((etype, new_reason or str(new_phase), str(new_status.get("message") or new_phase)))
    failed_new, failed_old = int(new_status.get("failedAttempts") or 0), int(old.get("failedAttempts") or 0)
    if failed_new > failed_old:
        events.append(("Warning", "AttemptFailed", f"{failed_new} failed attempt(s) so far"))
    risk_new, risk_old = _condition_of(new_status, "MemoryAtRisk"), _condition_of(old, "MemoryAtRisk")
    if risk_new is not None and risk_new[0] == "True" and risk_new != risk_old:
        events.append(("Warning", risk_new[1], risk_new[2]))
    improved_new, improved_old = _model_improved(new_status), _model_improved(old)
    if improved_new is not None and improved_new != improved_old:
        status, reason, message = improved_new
        if status == "False":  # the job succeeded but its model is no better than the base model
            events.append(("Warning", reason, message or "the finetuned model did not beat the base model"))
    att_new, att_old = int(new_status.get("attempts") or 0), int(old.get("attempts") or 0)
    if att_new > att_old:
        events.append(("Normal", "AttemptStarted", f"attempt {att_new} started"))
    return events


def _condition_of(status: Mapping[str, Any], ctype: str) -> tuple[str, str, str] | None:
    """(status, reason, message) of a condition, if any."""
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == ctype:
            return str(c.get("status")), str(c.get("reason") or ""), str(c.get("message") or "")
    return None


def _model_improved(status: Mapping[str, Any]) -> tuple[str, str, str] | None:
    return _condition_of(status, "ModelImproved")


def _reason_of(status: Mapping[str, Any]) -> str:
    """The reason of the condition matching the phase (Running, Failed, ...), else of Ready."""
    phase = status.get("phase")
    conds = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    key = {"Pending": "Reconciling", "Queued": "Admitted"}.get(str(phase), str(phase))
    cond = conds.get(key) or conds.get("Ready") or {}
    return str(cond.get("reason") or _reason(status))


def disruption_event(
    ended: o.AttemptObservation, checkpoints: Mapping[str, Any] | None
) -> tuple[str, str, str] | None:
    """The Event of an attempt that a disruption (eviction, preemption, node loss) ended, posted when the
    next attempt starts: which pod, why, and the checkpoint the next attempt resumes from (the newest one
    in status.checkpoints). None if the attempt did not end by a disruption."""
    if not ended.observation.disruption:
        return None
    latest = (checkpoints or {}).get("latest") if isinstance(checkpoints, Mapping) else None
    if isinstance(latest, Mapping) and latest.get("step") is not None:
        where = str(latest.get("uri") or latest.get("modelId") or "")
        resume = f"checkpoint at step {latest['step']}" + (f" ({where})" if where else "")
    else:
        resume = "the start (no checkpoint yet)"
    what = ended.observation.message or ended.observation.reason or "disrupted"
    return (
        "Warning",
        "AttemptDisrupted",
        f"attempt {ended.number} ended by a disruption, not counted as a failure: {what}; "
        f"attempt {ended.number + 1} resumes from {resume}",
    )
