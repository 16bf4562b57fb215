"""derive_status: the complete FinetuneJob status, computed from what is observed and the clock.

Nothing is accumulated: the same job, observations and clock always give the same status. The only thing
carried over from the current status is what cannot be observed again: a condition's lastTransitionTime
while its status stays the same, the start and completion times, and a terminal phase (a finished job
never goes back to running, even if its children disappear).

Conditions: Admitted, Running, Succeeded, Failed, Suspended, Ready, and kstatus' Reconciling / Stalled.
kstatus (Flux, kpt, cli-utils) reads a custom resource as InProgress while ``Reconciling`` is True, Failed
while ``Stalled`` is True, and Current otherwise once ``observedGeneration`` matches; so Reconciling is True
while Pending, Queued or Running, and Stalled is True when Failed. ``Ready`` mirrors the terminal state
(True when Succeeded, False with the failure reason when Failed, False/Progressing otherwise), and
``kubectl wait --for=condition=Succeeded`` (or ``=Failed``) works on the Succeeded and Failed conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..api.common import Condition
from ..api.finetunejob import FinetuneJob
from ..api.jobstatus import TERMINAL_PHASES, FinetuneJobStatus, MetricsStatus, Phase
from . import observed as o
from .distributed import derive_distributed, readiness_note
from .memory import memory_warning
from .observed import Observed
from .sections import derive_checkpoints, derive_dataset, derive_metrics, derive_model, derive_progress

CONDITION_TYPES = (
    "Admitted",
    "Running",
    "Succeeded",
    "Failed",
    "Suspended",
    "Ready",
    "Reconciling",
    "Stalled",
)  # always present; ModelImproved joins them once a finished trainer says whether its model beat the base
R_IMPROVED = "Improved"
R_NO_IMPROVEMENT = "NoImprovement"
R_BELOW_PEAK = "BelowMeasuredPeak"  # MemoryAtRisk: memory requested below the bench's peak (status/memory.py)
MAX_CONDITION_MESSAGE = 1024


def model_improved_condition(
    result: Mapping[str, Any] | None, now: datetime, gen: int | None, old: Mapping[str, Any]
) -> Condition | None:
    """ModelImproved from the trainer's result (metrics.modelImproved / improvementMessage): True/Improved,
    or False/NoImprovement with the figures when no evaluation beat the base model (the base model, or the
    best evaluated one, is what was published). Without a result saying so, an earlier condition is kept."""
    old_conds = {c.get("type", ""): c for c in old.get("conditions") or [] if isinstance(c, Mapping)}
    metrics = (result or {}).get("metrics")
    flag = metrics.get("modelImproved") if isinstance(metrics, Mapping) else None
    if not isinstance(flag, bool):
        prev = old_conds.get("ModelImproved")
        if prev is None:
            return None
        return _condition(
            "ModelImproved",
            str(prev.get("status", "Unknown")),
            str(prev.get("reason", "")),
            str(prev.get("message", "")),
            now,
            gen,
            old_conds,
        )
    assert isinstance(metrics, Mapping)
    message = str(metrics.get("improvementMessage") or "")[:MAX_CONDITION_MESSAGE]
    return _condition(
        "ModelImproved",
        "True" if flag else "False",
        R_IMPROVED if flag else R_NO_IMPROVEMENT,
        message,
        now,
        gen,
        old_conds,
    )


@dataclass(frozen=True)
class Decision:
    phase: Phase
    reason: str
    message: str
    finished_at: datetime | None = None


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def check_now(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (datetime.now(UTC))")
    return now.replace(microsecond=0)


def old_status_of(job: FinetuneJob | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(job, FinetuneJob):
        return job.status.to_json() if job.status is not None else {}
    status = job.get("status")
    return dict(status) if isinstance(status, Mapping) else {}


def _generation(job: FinetuneJob | Mapping[str, Any]) -> int | None:
    if isinstance(job, FinetuneJob):
        return job.metadata.generation
    gen = (job.get("metadata") or {}).get("generation")
    return gen if isinstance(gen, int) else None


def start_time(obs: Observed, old: Mapping[str, Any]) -> datetime | None:
    """The earliest start of any attempt (or the one already recorded)."""
    times = [t for t in (parse_time(a.observation.started_at) for a in obs.attempts) if t is not None]
    recorded = parse_time(old.get("startTime"))
    if recorded is not None:
        times.append(recorded)
    return min(times).replace(microsecond=0) if times else None


def deadline_at(job: FinetuneJob, obs: Observed, old: Mapping[str, Any]) -> datetime | None:
    """When spec.runPolicy.activeDeadlineSeconds runs out (measured from startTime, across attempts)."""
    ads = job.spec.run_policy.active_deadline_seconds
    start = start_time(obs, old)
    return start + timedelta(seconds=ads) if ads and start is not None else None


def _old_terminal(old: Mapping[str, Any]) -> Decision | None:
    phase = str(old.get("phase") or "")
    if phase not in {p.value for p in TERMINAL_PHASES}:
        return None
    cond: Mapping[str, Any] = next(
        (c for c in old.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == phase), {}
    )
    return Decision(
        Phase(phase),
        str(cond.get("reason") or phase),
        str(old.get("message") or cond.get("message") or ""),
        parse_time(old.get("completionTime")),
    )


def decide(job: FinetuneJob, obs: Observed, now: datetime, old: Mapping[str, Any]) -> Decision:
    """Phase, reason and message from the observations (first matching rule wins)."""
    sticky = _old_terminal(old)
    if sticky is not None:
        return sticky
    attempts = sorted(obs.attempts, key=lambda a: a.number)
    for a in attempts:
        if a.state == o.SUCCEEDED:
            return Decision(
                Phase.SUCCEEDED,
                o.R_SUCCEEDED,
                a.observation.message or f"attempt {a.number} succeeded",
                parse_time(a.observation.finished_at),
            )
    for a in attempts:
        if a.state == o.INVALID:
            msg = a.observation.message or "the trainer rejected its config or data"
            return Decision(
                Phase.FAILED,
                a.observation.reason or o.R_INVALID_DATA,  # e.g. Unauthorized, ProviderRefused
                f"attempt {a.number}: {msg}",
                parse_time(a.observation.finished_at),
            )
    if obs.admitted is False and obs.admission_reason == o.R_EXCEEDS_QUOTA:
        return Decision(
            Phase.FAILED, o.R_EXCEEDS_QUOTA, obs.admission_message or "the job can never fit its quota"
        )
    deadline = deadline_at(job, obs, old)
    latest = obs.latest
    if (
        obs.deadline_exceeded
        or (latest is not None and latest.state == o.DEADLINE)
        or (deadline is not None and now >= deadline)
    ):
        ads = job.spec.run_policy.active_deadline_seconds
        return Decision(Phase.FAILED, o.R_DEADLINE, f"the job ran longer than activeDeadlineSeconds ({ads}s)")
    limit = job.spec.run_policy.backoff_limit
    if obs.failed_attempts > limit:
        last = max((a for a in attempts if a.counts_as_failure), key=lambda a: a.number)
        return Decision(
            Phase.FAILED,
            o.R_BACKOFF_LIMIT,
            f"{obs.failed_attempts} failed attempts (backoffLimit {limit}); last: "
            f"{last.observation.message or last.observation.reason or 'failed'}",
            parse_time(last.observation.finished_at),
        )
    if job.spec.run_policy.suspend or obs.suspended:
        if latest is not None and latest.state in o.ACTIVE_STATES:
            return Decision(
                Phase.SUSPENDED, o.R_SUSPENDING, f"stopping attempt {latest.number} after a checkpoint"
            )
        return Decision(Phase.SUSPENDED, o.R_SUSPENDED, "suspended; resumes from the newest checkpoint")
    if obs.admitted is False and latest is not None and latest.state not in o.ACTIVE_STATES | {o.SUSPENDED}:
        # earlier attempts ended (suspended, interrupted): resuming waits for admission again
        return Decision(
            Phase.QUEUED,
            obs.admission_reason or o.R_QUOTA_EXCEEDED,
            obs.admission_message or "waiting for quota",
        )
    if latest is None or latest.state == o.NONE:
        if obs.admitted is None:
            return Decision(Phase.PENDING, o.R_AWAITING_ADMISSION, "waiting for admission")
        if obs.admitted is False:
            return Decision(
                Phase.QUEUED,
                obs.admission_reason or o.R_QUOTA_EXCEEDED,
                obs.admission_message or "waiting for quota",
            )
        n = latest.number if latest is not None else 1
        return Decision(Phase.PENDING, o.R_TRAINER_STARTING, f"starting attempt {n}")
    if latest.state == o.SUSPENDED:  # the trainer Job is held by Kueue
        return Decision(
            Phase.QUEUED,
            latest.observation.reason or o.R_QUEUED_IN_KUEUE,
            latest.observation.message or f"attempt {latest.number} waits for Kueue admission",
        )
    if latest.state == o.PENDING:
        return Decision(
            Phase.PENDING,
            o.R_TRAINER_STARTING,
            (latest.observation.message or f"attempt {latest.number} is starting")
            + readiness_note(job, latest.observation),
        )
    if latest.state == o.RUNNING:
        note = readiness_note(job, latest.observation)
        return Decision(Phase.RUNNING, o.R_TRAINING, f"attempt {latest.number} is training{note}")
    # the latest attempt ended without success: the next one will resume from the newest checkpoint
    what = latest.observation.message or latest.observation.reason or latest.state
    if latest.disruption:
        return Decision(
            Phase.RUNNING,
            o.R_RESTARTING,
            f"attempt {latest.number} was interrupted ({what}); resuming (not counted as a failure)",
        )
    return Decision(
        Phase.RUNNING,
        o.R_RETRYING,
        f"attempt {latest.number} failed ({what}); retrying ({obs.failed_attempts} of {limit} retries used)",
    )


def _condition(
    ctype: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    gen: int | None,
    old_conds: Mapping[str, Mapping[str, Any]],
) -> Condition:
    old = old_conds.get(ctype)
    ltt = now
    if old is not None and old.get("status") == status:
        ltt = parse_time(old.get("lastTransitionTime")) or now
    return Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=ltt,
        observed_generation=gen,
    )


def _conditions(
    dec: Decision, obs: Observed, now: datetime, gen: int | None, old: Mapping[str, Any]
) -> list[Condition]:
    old_conds = {c.get("type", ""): c for c in old.get("conditions") or [] if isinstance(c, Mapping)}
    phase, reason, msg = dec.phase, dec.reason, dec.message

    def cond(ctype: str, true: bool, r: str = reason, m: str = msg) -> Condition:
        return _condition(ctype, "True" if true else "False", r, m, now, gen, old_conds)

    # Admitted
    if dec.reason == o.R_INVALID_SPEC:
        admitted = cond("Admitted", False)
    elif phase in TERMINAL_PHASES and "Admitted" in old_conds and _old_terminal(old) is not None:
        prev = old_conds["Admitted"]
        admitted = _condition(
            "Admitted",
            str(prev.get("status", "True")),
            str(prev.get("reason", o.R_ADMITTED)),
            str(prev.get("message", "")),
            now,
            gen,
            old_conds,
        )
    elif dec.reason == o.R_QUEUED_IN_KUEUE:  # admission is Kueue's: its workload is not admitted yet
        admitted = cond("Admitted", False)
    elif obs.admitted is False or phase == Phase.QUEUED:
        admitted = cond("Admitted", False, obs.admission_reason or reason, obs.admission_message or msg)
    elif obs.admitted or obs.started_attempts > 0:
        by = ", ".join(obs.admitted_by)
        admitted = cond(
            "Admitted",
            True,
            o.R_ADMITTED,
            obs.admission_message or (f"admitted by {by}" if by else "admitted"),
        )
    else:
        admitted = _condition(
            "Admitted", "Unknown", o.R_AWAITING_ADMISSION, "waiting for admission", now, gen, old_conds
        )
    in_progress = phase in (Phase.PENDING, Phase.QUEUED, Phase.RUNNING)
    if phase == Phase.SUCCEEDED:
        ready = cond("Ready", True)
    elif phase in (Phase.FAILED, Phase.SUSPENDED):
        ready = cond("Ready", False)
    else:
        ready = cond("Ready", False, o.R_PROGRESSING)
    return [
        admitted,
        cond("Running", phase == Phase.RUNNING),
        cond("Succeeded", phase == Phase.SUCCEEDED),
        cond("Failed", phase == Phase.FAILED),
        cond("Suspended", phase == Phase.SUSPENDED),
        ready,
        cond(
            "Reconciling",
            in_progress,
            reason if in_progress else o.R_SUCCEEDED if phase == Phase.SUCCEEDED else reason,
        ),
        cond("Stalled", phase == Phase.FAILED),
    ]


def derive_status(job: FinetuneJob | Mapping[str, Any], observed: Observed, now: datetime) -> dict[str, Any]:
    """The complete new status (camelCase, as FinetuneJobStatus.to_json() gives).

    `job` is the parsed FinetuneJob, or its raw body when `observed.spec_error` is set (an invalid spec
    cannot be parsed).
    """
    now = check_now(now)
    old = old_status_of(job)
    gen = _generation(job)
    if not isinstance(job, FinetuneJob) or observed.spec_error is not None:
        err = observed.spec_error
        msg = err.message if err is not None else "invalid FinetuneJob"
        if err is not None and err.fields:
            msg = f"{msg} (fields: {', '.join(err.fields)})"
        sticky = _old_terminal(old)
        dec = (
            Decision(Phase.FAILED, o.R_INVALID_SPEC, msg)
            if sticky is None or not isinstance(job, FinetuneJob)
            else sticky
        )
        done_at = parse_time(old.get("completionTime")) or now
        engine = old.get("engine") if isinstance(job, Mapping) else job.spec.engine.kind.value
        status = FinetuneJobStatus(
            phase=dec.phase,
            engine=engine,
            conditions=_conditions(dec, observed, now, gen, old),
            observed_generation=gen,
            message=dec.message,
            completion_time=done_at,
            start_time=parse_time(old.get("startTime")),
        )
        return status.to_json()
    dec = decide(job, observed, now, old)
    terminal = dec.phase in TERMINAL_PHASES
    completion: datetime | None = None
    if terminal:
        completion = (parse_time(old.get("completionTime")) or dec.finished_at or now).replace(microsecond=0)
    latest = observed.latest
    result = next(
        (
            a.observation.result
            for a in sorted(observed.attempts, key=lambda a: -a.number)
            if a.observation.result
        ),
        None,
    )
    tokens = next(
        (a.observation.trained_tokens for a in observed.attempts if a.observation.trained_tokens is not None),
        None,
    )
    trainer_progress = (
        observed.trainer_progress if observed.trainer_progress is not None else old.get("progress")
    )
    trainer_ckpts = (
        observed.trainer_checkpoints if observed.trainer_checkpoints is not None else old.get("checkpoints")
    )
    remote = (
        observed.remote_job_id
        or next(
            (
                a.observation.remote_job_id
                for a in sorted(observed.attempts, key=lambda a: -a.number)
                if a.observation.remote_job_id
            ),
            None,
        )
        or old.get("remoteJobId")
    )
    ckpts = derive_checkpoints(trainer_ckpts, [a.observation.checkpoints for a in observed.attempts])
    conditions = _conditions(dec, observed, now, gen, old)
    improved = model_improved_condition(result if dec.phase == Phase.SUCCEEDED else None, now, gen, old)
    if improved is not None:
        conditions.append(improved)
    memory = memory_warning(job)
    if memory is not None:  # before the pod is OOM-killed: the request is below the measured peak
        old_conds = {c.get("type", ""): c for c in old.get("conditions") or [] if isinstance(c, Mapping)}
        conditions.append(_condition("MemoryAtRisk", "True", R_BELOW_PEAK, memory, now, gen, old_conds))
    status = FinetuneJobStatus(
        phase=dec.phase,
        engine=job.spec.engine.kind.value,
        conditions=conditions,
        observed_generation=gen,
        message=dec.message,
        start_time=start_time(observed, old),
        completion_time=completion,
        attempts=max(observed.started_attempts, int(old.get("attempts") or 0)) or None,
        failed_attempts=observed.failed_attempts if observed.attempts else old.get("failedAttempts"),
        progress=derive_progress([trainer_progress, latest.observation.progress if latest else None]),
        checkpoints=ckpts,
        metrics=_with_mrr_change(derive_metrics(result, tokens)) or old.get("metrics"),
        model=None
        if result and result.get("generateOnly")  # stopped after generating the dataset: no model
        else (derive_model(job, result, dec.phase == Phase.SUCCEEDED) if result else None)
        or old.get("model")
        or derive_model(job, None, dec.phase == Phase.SUCCEEDED),
        dataset=derive_dataset(result) or old.get("dataset"),
        remote_job_id=remote,
        queue_position=observed.queue_position if dec.phase == Phase.QUEUED else None,
        admitted_by=list(observed.admitted_by) or None,
        distributed=derive_distributed(job, latest.observation if latest and not terminal else None),
    )
    return status.to_json()


def _with_mrr_change(metrics: MetricsStatus | None) -> MetricsStatus | None:
    """The metrics with the short before→after MRR@10 string of the printer column."""
    return metrics.with_mrr_change() if metrics is not None else None


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch of `status` turning `old` into `new` (None when nothing changed).

    Only changed top-level fields are sent (so fields the trainer owns, progress and checkpoints, are not
    overwritten when the operator's view of them did not change); removed fields are sent as null. A
    condition whose status did not change keeps its old lastTransitionTime.
    """
    old = dict(old or {})
    new = dict(new)
    if "conditions" in new and old.get("conditions"):
        prev = {c.get("type"): c for c in old["conditions"] if isinstance(c, Mapping)}
        fixed = []
        for cond in new["conditions"]:
            p = prev.get(cond.get("type"))
            keep = p is not None and p.get("status") == cond.get("status") and p.get("lastTransitionTime")
            fixed.append({**cond, "lastTransitionTime": p["lastTransitionTime"]} if keep and p else cond)
        new["conditions"] = fixed
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch or None
