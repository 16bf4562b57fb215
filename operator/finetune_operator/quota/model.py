"""The quota core's view of the cluster: small frozen values built from parsed API objects.

Everything here is pure: the I/O side (:mod:`finetune_operator.quota_controller`) lists the objects,
and these functions turn them into a :class:`Snapshot` that :func:`finetune_operator.quota.decide` reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from finetune_operator.api.common import parse_duration
from finetune_operator.api.finetunejob import FinetuneJob, FinetuneJobSpec
from finetune_operator.api.jobstatus import TERMINAL_PHASES, Phase
from finetune_operator.api.trainingquota import TrainingQuota

# The annotation that records a quota admission on the FinetuneJob itself (RFC 3339 time of admission).
ADMITTED_AT = "finetune.dev/admitted-at"
# The TrainingQuotas that admitted the job, comma separated (informational).
ADMITTED_BY = "finetune.dev/admitted-by"
# The label the API server sets on every namespace since Kubernetes 1.21.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class JobView:
    """What admission needs to know about one FinetuneJob.

    ``admitted`` is the persisted admission (see :func:`is_admitted`: the ``finetune.dev/admitted-at``
    annotation, or the Admitted condition of a job admitted while no quota applied).
    ``token_time`` is when ``trained_tokens`` count in a rolling window (completion time of a finished
    job; ``None`` for a running one, which counts at ``now``). ``run_start`` / ``run_end`` bound the
    time the job held its GPUs (for GPU-hour budgets; ``run_end`` None means still running).
    """

    uid: str
    namespace: str
    name: str
    created: datetime
    priority: int = 0
    admitted: bool = False
    admitted_at: datetime | None = None
    finished: bool = False
    suspended: bool = False
    deleting: bool = False
    kueue: bool = False
    gpus: Mapping[str, int] = dataclasses.field(default_factory=dict)
    hosted_provider: str | None = None
    trained_tokens: int = 0
    token_time: datetime | None = None
    run_start: datetime | None = None
    run_end: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def active(self) -> bool:
        """Neither finished, suspended, being deleted nor handed to Kueue: it may hold or want capacity."""
        return not (self.finished or self.suspended or self.deleting or self.kueue)

    @property
    def holds_capacity(self) -> bool:
        """Admitted and unfinished: counts against maxJobs and GPU limits."""
        return self.admitted and self.active

    @property
    def wants_admission(self) -> bool:
        return self.active and not self.admitted

    @property
    def gpu_total(self) -> int:
        return sum(self.gpus.values())


@dataclasses.dataclass(frozen=True)
class QuotaView:
    """One TrainingQuota, with the namespaces it covers already resolved."""

    name: str
    quota: TrainingQuota
    namespaces: frozenset[str]

    def covers(self, namespace: str) -> bool:
        return namespace in self.namespaces


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one admission pass reads, taken at one instant ``now``."""

    jobs: Sequence[JobView]
    quotas: Sequence[QuotaView]
    now: datetime


def namespace_labels(name: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """A namespace's labels, with the ``kubernetes.io/metadata.name`` label the API server adds."""
    out = dict(labels or {})
    out.setdefault(NAMESPACE_NAME_LABEL, name)
    return out


def quota_view(
    quota: TrainingQuota, namespaces: Mapping[str, Mapping[str, str]], job_namespaces: Sequence[str] = ()
) -> QuotaView:
    """Resolve which namespaces a quota covers.

    ``namespaces`` maps every known namespace to its labels. Namespaces that only appear on jobs
    (``job_namespaces``) are matched with just their name label, so a job is never left uncovered by
    an empty (select-all) quota because its Namespace object was not listed.
    """
    selector = quota.spec.namespace_selector
    names = set(namespaces) | set(job_namespaces)
    covered = frozenset(n for n in names if selector.matches(namespace_labels(n, namespaces.get(n))))
    return QuotaView(name=quota.metadata.name, quota=quota, namespaces=covered)


def resolve_priority(class_name: str | None, classes: Mapping[str, int], default: int = 0) -> int:
    """The priority value of a PriorityClass name (``default`` if unset or unknown)."""
    if class_name is None:
        return default
    return classes.get(class_name, default)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_admitted(body: Mapping[str, Any]) -> bool:
    """Whether a FinetuneJob body records an admission that holds capacity while the job is unfinished.

    Either the ``finetune.dev/admitted-at`` annotation a quota pass wrote, or, for a job that is not
    suspended, an ``Admitted=True`` condition: a job admitted while no TrainingQuota applied carries no
    annotation (admission wrote nothing), but it is running and must count once a quota appears. A
    suspended job counts only through the annotation, so that releasing it (removing the annotation)
    makes a resume ask admission again.
    """
    meta: Mapping[str, Any] = body.get("metadata") or {}
    if (meta.get("annotations") or {}).get(ADMITTED_AT):
        return True
    status: Mapping[str, Any] = body.get("status") or {}
    if status.get("phase") == Phase.SUSPENDED or ((body.get("spec") or {}).get("runPolicy") or {}).get(
        "suspend"
    ):
        return False
    return any(
        c.get("type") == "Admitted" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    )


def job_view(
    job: FinetuneJob,
    *,
    priority_classes: Mapping[str, int] | None = None,
    default_priority: int = 0,
    kueue_mode: bool = False,
) -> JobView:
    """Build the admission view of a parsed FinetuneJob (see :func:`job_view_from_body`)."""
    return job_view_from_body(
        job.to_json(),
        job.spec,
        priority_classes=priority_classes,
        default_priority=default_priority,
        kueue_mode=kueue_mode,
    )


def job_view_from_body(
    body: Mapping[str, Any],
    spec: FinetuneJobSpec,
    *,
    priority_classes: Mapping[str, int] | None = None,
    default_priority: int = 0,
    kueue_mode: bool = False,
) -> JobView:
    """Build the admission view from a FinetuneJob body and its already validated spec.

    The spec is passed parsed (callers memoize it per generation); metadata and status are read from
    the body. A job is Kueue-managed (skipped by quota admission) when ``kueue_mode`` is on and it sets
    ``spec.runPolicy.queueName``.
    """
    meta: Mapping[str, Any] = body.get("metadata") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    phase = status.get("phase")
    gpus: dict[str, int] = {}
    provider: str | None = None
    if spec.engine.in_cluster:
        gpu = spec.placement.resources.gpu
        if gpu.count > 0:  # every trainer pod's GPUs (placement.nodes pods of gpu.count each)
            gpus[gpu.resource_name] = gpu.count * spec.placement.nodes
    else:
        provider = spec.engine.kind.value
    admitted_at = parse_time(annotations.get(ADMITTED_AT))
    created = parse_time(meta.get("creationTimestamp")) or EPOCH
    finished = phase in TERMINAL_PHASES
    suspended = spec.run_policy.suspend or phase == Phase.SUSPENDED
    tokens = int((status.get("metrics") or {}).get("trainedTokens") or 0)
    token_time: datetime | None = None
    run_start = parse_time(status.get("startTime"))
    run_end: datetime | None = None
    if finished:
        run_end = parse_time(status.get("completionTime")) or run_start or created
        token_time = run_end
    elif run_start is not None and suspended:
        # A suspended job stopped holding GPUs when its Suspended condition turned True.
        cond = next(
            (
                c
                for c in status.get("conditions") or []
                if c.get("type") == "Suspended" and c.get("status") == "True"
            ),
            None,
        )
        run_end = (parse_time(cond.get("lastTransitionTime")) if cond else None) or run_start
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    return JobView(
        uid=str(meta.get("uid") or f"{namespace}/{name}"),
        namespace=namespace,
        name=name,
        created=created,
        priority=resolve_priority(
            spec.placement.priority_class_name, priority_classes or {}, default_priority
        ),
        admitted=is_admitted(body),
        admitted_at=admitted_at,
        finished=finished,
        suspended=suspended,
        deleting=bool(meta.get("deletionTimestamp")),
        kueue=kueue_mode and spec.run_policy.queue_name is not None,
        gpus=gpus,
        hosted_provider=provider,
        trained_tokens=tokens,
        token_time=token_time,
        run_start=run_start,
        run_end=run_end,
    )


def window_seconds(window: str) -> float:
    return parse_duration(window)
