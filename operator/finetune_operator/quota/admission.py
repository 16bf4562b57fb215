"""Admission decisions: which queued FinetuneJobs fit their TrainingQuotas now. Pure; clock injected.

One pass (:func:`decide`) reads a :class:`~finetune_operator.quota.model.Snapshot` and

1. recomputes every quota's usage from the jobs (admitted, unfinished jobs hold ``jobs`` and ``gpus``;
   hosted jobs' reported trained tokens and in-cluster jobs' GPU time count in rolling windows);
2. walks the jobs that want admission in order (priority descending, then creation time, then name)
   and admits a job only if every covering quota has room for it;
3. keeps strict FIFO per quota *and per limit* (Kueue's StrictFIFO, refined): when a job does not fit a
   quota's limit, that limit is blocked in that quota for every later job, so a small low-priority job
   never jumps a blocked larger one. Limits a blocked job does not need stay open (a hosted job waiting
   for a 30-day token budget does not hold back GPU jobs; a job waiting for GPUs does not hold back
   hosted jobs), unless it is ``jobs`` (maxJobs), which every job needs;
4. fails jobs that can never fit (more GPUs than a covering limit, maxJobs 0, a zero budget).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from finetune_operator.api.trainingquota import QuotaLimits

from .model import JobView, QuotaView, Snapshot, format_time, window_seconds

REASON_ADMITTED = "Admitted"
REASON_QUOTA_EXCEEDED = "QuotaExceeded"
REASON_EXCEEDS_QUOTA = "ExceedsQuota"
REASON_KUEUE = "Kueue"
REASON_INACTIVE = "Inactive"
# How soon to look again at a GPU-hour budget that blocks a job (GPU time rolls out continuously).
GPU_HOURS_RECHECK = timedelta(seconds=60)


class Verdict(StrEnum):
    ADMITTED = "Admitted"  # admitted now or earlier (holds capacity while unfinished)
    QUEUED = "Queued"  # waits: Admitted=False, reason QuotaExceeded
    REJECTED = "Rejected"  # can never fit: Failed, reason ExceedsQuota
    SKIPPED = "Skipped"  # not subject to quota admission now (finished, suspended, deleting, Kueue-managed)


@dataclasses.dataclass(frozen=True)
class AdmissionDecision:
    """The admission state of one job after a pass."""

    uid: str
    namespace: str
    name: str
    verdict: Verdict
    reason: str
    message: str
    quotas: tuple[str, ...] = ()  # the TrainingQuotas covering the job's namespace
    queue_position: int | None = None  # 1-based, when queued
    blocking: tuple[str, ...] = ()  # the quotas that hold the job back (queued) or reject it
    newly_admitted: bool = False  # admitted by this pass: the admission must be persisted

    @property
    def admitted(self) -> bool:
        return self.verdict == Verdict.ADMITTED

    @property
    def queued(self) -> bool:
        return self.verdict == Verdict.QUEUED

    @property
    def rejected(self) -> bool:
        return self.verdict == Verdict.REJECTED


@dataclasses.dataclass(frozen=True)
class LimitUsage:
    """Usage of one limit of one quota (``key`` is the UsageItem name)."""

    key: str  # jobs | gpus/<resource> | hostedTokens/<provider>/<window> | gpuHours/<resource>/<window>
    label: str  # short form for the printer column, e.g. nvidia.com/gpu
    used: float
    limit: float

    def render(self) -> str:
        return f"{self.label} {_num(self.used)}/{_num(self.limit)}"


@dataclasses.dataclass(frozen=True)
class QuotaOutcome:
    """A quota after a pass: usage including this pass's admissions, admitted and queued jobs."""

    name: str
    usage: tuple[LimitUsage, ...]
    admitted: tuple[str, ...]  # uids of admitted, unfinished jobs covered
    queued: tuple[str, ...]  # uids of jobs waiting in this quota, in admission order


@dataclasses.dataclass(frozen=True)
class AdmissionResult:
    decisions: dict[str, AdmissionDecision]
    quotas: dict[str, QuotaOutcome]
    # Admitted jobs that are suspended: their admission should be withdrawn so a resume re-queues them.
    releases: tuple[str, ...]
    # When a time-based budget next frees room for a blocked job (None: no such job).
    next_check: datetime | None

    @property
    def newly_admitted(self) -> list[AdmissionDecision]:
        return [d for d in self.decisions.values() if d.newly_admitted]

    @property
    def queued(self) -> list[AdmissionDecision]:
        return sorted(
            (d for d in self.decisions.values() if d.queued),
            key=lambda d: (d.queue_position or 0, d.namespace, d.name),
        )


def _num(value: float) -> str:
    if value >= 1_000_000 and value == int(value):
        return f"{value / 1_000_000:g}M"
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def admission_order(job: JobView) -> tuple[int, datetime, str, str]:
    """Priority descending, then creation time, then name (then namespace, for a total order)."""
    return (-job.priority, job.created, job.name, job.namespace)


@dataclasses.dataclass
class _Budget:
    key: str
    label: str
    limit: float
    used: float = 0.0
    entries: list[tuple[datetime, float]] = dataclasses.field(default_factory=list)  # (rolls out at, amount)


class _QuotaState:
    """Mutable usage of one quota during a pass."""

    def __init__(self, view: QuotaView, now: datetime) -> None:
        self.view = view
        self.name = view.name
        self.limits: QuotaLimits = view.quota.spec.limits
        self.jobs = 0
        self.gpus: dict[str, int] = {g.resource_name: 0 for g in self.limits.gpus or []}
        self.gpu_limits = {g.resource_name: g.count for g in self.limits.gpus or []}
        self.tokens = [
            (
                b.provider,
                _Budget(
                    f"hostedTokens/{b.provider}/{b.window}",
                    f"tokens {b.provider}/{b.window}",
                    float(b.tokens),
                ),
                window_seconds(b.window),
            )
            for b in self.limits.hosted_tokens or []
        ]
        self.gpu_hours = [
            (
                b.resource_name,
                _Budget(
                    f"gpuHours/{b.resource_name}/{b.window}",
                    f"gpu-hours {b.resource_name}/{b.window}",
                    float(b.hours),
                ),
                window_seconds(b.window),
            )
            for b in self.limits.gpu_hours or []
        ]
        self.now = now
        self.blocked: dict[str, str] = {}  # limit key -> the job (ns/name) blocking it
        self.admitted: list[str] = []
        self.queued: list[str] = []

    # --- usage --------------------------------------------------------------------------------------

    def account(self, job: JobView) -> None:
        """Add an existing job's usage (called once per covered job before admitting anything)."""
        if job.holds_capacity:
            self.hold(job)
        if job.hosted_provider is not None and job.trained_tokens > 0:
            at = job.token_time or self.now
            for provider, budget, window in self.tokens:
                if provider in ("any", job.hosted_provider) and at > self.now - timedelta(seconds=window):
                    budget.used += job.trained_tokens
                    if job.token_time is not None:
                        budget.entries.append((at + timedelta(seconds=window), float(job.trained_tokens)))
        if job.run_start is not None:
            end = job.run_end or (self.now if job.holds_capacity else job.run_start)
            for resource, budget, window in self.gpu_hours:
                count = job.gpus.get(resource, 0)
                start = max(job.run_start, self.now - timedelta(seconds=window))
                if count > 0 and end > start:
                    budget.used += count * (end - start).total_seconds() / 3600.0

    def hold(self, job: JobView) -> None:
        self.jobs += 1
        for resource, count in job.gpus.items():
            if resource in self.gpus:
                self.gpus[resource] += count
        self.admitted.append(job.uid)

    # --- checks -------------------------------------------------------------------------------------

    def needs(self, job: JobView) -> list[str]:
        """The limit keys of this quota that the job consumes."""
        keys: list[str] = []
        if self.limits.max_jobs is not None:
            keys.append("jobs")
        keys += [f"gpus/{r}" for r, n in job.gpus.items() if n > 0 and r in self.gpu_limits]
        keys += [
            b.key
            for p, b, _ in self.tokens
            if job.hosted_provider is not None and p in ("any", job.hosted_provider)
        ]
        keys += [b.key for r, b, _ in self.gpu_hours if job.gpus.get(r, 0) > 0]
        return keys

    def never_fits(self, job: JobView) -> str | None:
        if self.limits.max_jobs == 0:
            return f"TrainingQuota {self.name}: maxJobs is 0"
        for resource, count in job.gpus.items():
            limit = self.gpu_limits.get(resource)
            if limit is not None and count > limit:
                return f"TrainingQuota {self.name}: job needs {count} {resource} but the limit is {limit}"
        for provider, budget, _ in self.tokens:
            if (
                job.hosted_provider is not None
                and provider in ("any", job.hosted_provider)
                and budget.limit <= 0
            ):
                return f"TrainingQuota {self.name}: the hosted token budget {budget.label} is 0"
        for resource, budget, _ in self.gpu_hours:
            if job.gpus.get(resource, 0) > 0 and budget.limit <= 0:
                return f"TrainingQuota {self.name}: the GPU-hour budget {budget.label} is 0"
        return None

    def shortfalls(self, job: JobView) -> list[tuple[str, str]]:
        """(limit key, message) for every limit of this quota without room for the job now."""
        out: list[tuple[str, str]] = []
        if self.limits.max_jobs is not None and self.jobs + 1 > self.limits.max_jobs:
            out.append(
                ("jobs", f"TrainingQuota {self.name}: jobs {self.jobs}/{self.limits.max_jobs} admitted")
            )
        for resource, count in job.gpus.items():
            limit = self.gpu_limits.get(resource)
            if count > 0 and limit is not None and self.gpus[resource] + count > limit:
                out.append(
                    (
                        f"gpus/{resource}",
                        f"TrainingQuota {self.name}: {resource} "
                        f"{self.gpus[resource]}/{limit} in use, job needs {count}",
                    )
                )
        for provider, budget, _ in self.tokens:
            if (
                job.hosted_provider is not None
                and provider in ("any", job.hosted_provider)
                and budget.used >= budget.limit
            ):
                frees = self.token_frees_at(budget)
                when = f"; room again at {format_time(frees)}" if frees is not None else ""
                out.append(
                    (
                        budget.key,
                        f"TrainingQuota {self.name}: hosted tokens {budget.label} "
                        f"{_num(budget.used)}/{_num(budget.limit)} used{when}",
                    )
                )
        for resource, budget, _ in self.gpu_hours:
            if job.gpus.get(resource, 0) > 0 and budget.used >= budget.limit:
                out.append(
                    (
                        budget.key,
                        f"TrainingQuota {self.name}: {budget.label} "
                        f"{_num(budget.used)}/{_num(budget.limit)} used",
                    )
                )
        return out

    def token_frees_at(self, budget: _Budget) -> datetime | None:
        """When enough tokens roll out of the window for usage to drop below the budget."""
        used = budget.used
        for rolls_out, amount in sorted(budget.entries):
            used -= amount
            if used < budget.limit:
                return rolls_out
        return None

    def usage(self) -> tuple[LimitUsage, ...]:
        items: list[LimitUsage] = []
        if self.limits.max_jobs is not None:
            items.append(LimitUsage("jobs", "jobs", float(self.jobs), float(self.limits.max_jobs)))
        for resource, limit in self.gpu_limits.items():
            items.append(LimitUsage(f"gpus/{resource}", resource, float(self.gpus[resource]), float(limit)))
        for _, budget, _ in self.tokens:
            items.append(LimitUsage(budget.key, budget.label, budget.used, budget.limit))
        for _, budget, _ in self.gpu_hours:
            items.append(LimitUsage(budget.key, budget.label, round(budget.used, 4), budget.limit))
        return tuple(items)


def decide(snapshot: Snapshot) -> AdmissionResult:
    """One admission pass over a snapshot (see the module docstring)."""
    now = snapshot.now
    states = {q.name: _QuotaState(q, now) for q in sorted(snapshot.quotas, key=lambda q: q.name)}
    covering: dict[str, list[_QuotaState]] = {}
    for job in snapshot.jobs:
        covering[job.uid] = [s for s in states.values() if s.view.covers(job.namespace) and not job.kueue]
        for state in covering[job.uid]:
            state.account(job)

    decisions: dict[str, AdmissionDecision] = {}
    releases: list[str] = []
    next_check: datetime | None = None
    for job in snapshot.jobs:
        names = tuple(s.name for s in covering[job.uid])
        if job.kueue:
            decisions[job.uid] = _decision(
                job,
                Verdict.SKIPPED,
                REASON_KUEUE,
                "admission is handed to Kueue (spec.runPolicy.queueName)",
                names,
            )
        elif job.holds_capacity:
            decisions[job.uid] = _decision(
                job, Verdict.ADMITTED, REASON_ADMITTED, _admitted_message(names), names
            )
        elif not job.active:
            if job.admitted and job.suspended and not job.finished and not job.deleting:
                releases.append(job.uid)
            decisions[job.uid] = _decision(
                job,
                Verdict.SKIPPED,
                REASON_INACTIVE,
                "finished, suspended or being deleted: holds no quota",
                names,
            )

    for job in sorted((j for j in snapshot.jobs if j.wants_admission), key=admission_order):
        quotas = covering[job.uid]
        names = tuple(s.name for s in quotas)
        never = [(s.name, msg) for s in quotas if (msg := s.never_fits(job)) is not None]
        if never:
            decisions[job.uid] = _decision(
                job,
                Verdict.REJECTED,
                REASON_EXCEEDS_QUOTA,
                "; ".join(m for _, m in never) + ": the job can never be admitted",
                names,
                blocking=tuple(n for n, _ in never),
            )
            continue
        reasons: list[tuple[_QuotaState, str]] = []
        for state in quotas:
            needs = state.needs(job)
            short = state.shortfalls(job)
            short_keys = {k for k, _ in short}
            reasons += [(state, msg) for _, msg in short]
            for key in needs:
                blocker = state.blocked.get(key)
                if blocker is not None and key not in short_keys:
                    reasons.append(
                        (
                            state,
                            f"TrainingQuota {state.name}: {_limit_label(state, key)} "
                            f"has room, but {blocker} is ahead in the queue (strict FIFO)",
                        )
                    )
        if not reasons:
            for state in quotas:
                state.hold(job)
            decisions[job.uid] = _decision(
                job, Verdict.ADMITTED, REASON_ADMITTED, _admitted_message(names), names, newly_admitted=True
            )
            continue
        blocking: list[str] = []
        for state, _ in reasons:
            if state.name not in blocking:
                blocking.append(state.name)
                state.queued.append(job.uid)
        for state in quotas:
            for key, _ in state.shortfalls(job):
                state.blocked.setdefault(key, job.key)
                at = _recheck_at(state, key)
                if at is not None and (next_check is None or at < next_check):
                    next_check = at
        decisions[job.uid] = _decision(
            job,
            Verdict.QUEUED,
            REASON_QUOTA_EXCEEDED,
            "; ".join(dict.fromkeys(m for _, m in reasons)),
            names,
            blocking=tuple(blocking),
        )

    # Queue positions: the place in the queue of the first quota that holds the job back.
    positions = {name: {uid: i + 1 for i, uid in enumerate(s.queued)} for name, s in states.items()}
    for uid, decision in list(decisions.items()):
        if decision.queued:
            position = positions[decision.blocking[0]][uid]
            decisions[uid] = dataclasses.replace(decision, queue_position=position)

    outcomes = {
        name: QuotaOutcome(name, s.usage(), tuple(s.admitted), tuple(s.queued)) for name, s in states.items()
    }
    return AdmissionResult(
        decisions=decisions, quotas=outcomes, releases=tuple(releases), next_check=next_check
    )


def _recheck_at(state: _QuotaState, key: str) -> datetime | None:
    for _, budget, _ in state.tokens:
        if budget.key == key:
            return state.token_frees_at(budget)
    for _, budget, _ in state.gpu_hours:
        if budget.key == key:
            return state.now + GPU_HOURS_RECHECK
    return None


def _limit_label(state: _QuotaState, key: str) -> str:
    if key.startswith("gpus/"):
        return key.removeprefix("gpus/")
    for _, budget, _ in [*state.tokens, *state.gpu_hours]:
        if budget.key == key:
            return budget.label
    return key


def _admitted_message(quotas: Sequence[str]) -> str:
    if not quotas:
        return "no TrainingQuota covers this namespace"
    return "admitted by TrainingQuota " + ", ".join(quotas)


def _decision(
    job: JobView,
    verdict: Verdict,
    reason: str,
    message: str,
    quotas: Iterable[str],
    *,
    blocking: tuple[str, ...] = (),
    newly_admitted: bool = False,
) -> AdmissionDecision:
    return AdmissionDecision(
        uid=job.uid,
        namespace=job.namespace,
        name=job.name,
        verdict=verdict,
        reason=reason,
        message=message,
        quotas=tuple(quotas),
        blocking=blocking,
        newly_admitted=newly_admitted,
    )
