"""The I/O side of TrainingQuota admission: one serialized admission loop per operator.

* FinetuneJobs are read from an informer-style cache (:class:`~finetune_operator.quota.cache.JobCache`):
  filled by a LIST at start-up and every ``relist_seconds``, kept current by the FinetuneJob watch
  (:meth:`QuotaController.observe`, fed by the operator's kopf event handler) and by the responses of the
  controller's own writes. Every pass LISTs the (few) TrainingQuotas, Namespaces and PriorityClasses,
  derives usage from the cached job objects (never from a counter), runs the pure
  :func:`finetune_operator.quota.decide`, and persists each new admission on the FinetuneJob itself: the
  annotation ``finetune.dev/admitted-at`` written with a ``resourceVersion`` precondition (optimistic
  concurrency) before the handlers create the trainer Job. A 409 means the cached body was stale: the
  controller GETs the job, updates the cache and decides again. A restarted operator rebuilds the cache
  from a LIST and recomputes the same admitted set from the cluster.
* Passes are serialized by one ``asyncio.Lock``; concurrent callers coalesce onto a pass that
  started after they asked (so a burst of 300 new jobs costs a handful of passes, not 300).
* When capacity frees (a job finishes, is suspended or deleted; a quota changes) :meth:`on_capacity_change`
  runs a pass at once and wakes the newly admitted jobs' reconcile; a timer re-runs admission when a
  rolling budget frees room.

Install into the handlers' :class:`~finetune_operator.handlers.context.OperatorContext` with
:meth:`QuotaController.install` and register the kopf watches with
:func:`finetune_operator.quota_handlers.register_quota`; its metrics are in :mod:`~finetune_operator.quota_metrics`,
its pure helpers in :mod:`~finetune_operator.quota_decisions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from . import admission as hook
from .aio import spawn_logged
from .api.errors import SpecError, parse_quota
from .api.finetunejob import FinetuneJob, FinetuneJobSpec
from .api.trainingquota import TrainingQuota
from .config import Settings
from .kube import ApiError, JsonDict, KubeClient
from .quota import (
    AdmissionDecision,
    AdmissionResult,
    JobView,
    Snapshot,
    decide,
    job_view_from_body,
    quota_view,
)
from .quota.cache import JobCache, resource_version
from .quota_decisions import drop_admissions, holds_capacity, to_hook_decision
from .quota_metrics import QuotaMetrics
from .quota_writes import AdmissionWriter

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Rebuild the job cache from a LIST at least this often (repairs a lost watch event; kopf does not report
# deletions that happened while its watch was reconnecting).
RELIST_SECONDS = 300.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class QuotaController:
    """Serialized TrainingQuota admission for one operator (see the module docstring)."""

    def __init__(
        self,
        kube: KubeClient,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = utc_now,
        metrics: QuotaMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or QuotaMetrics(registry or CollectorRegistry())
        # Called with the uid of every job this controller admitted (or released) on its own, so its
        # reconcile runs now. Set by install(); the annotation write also produces a watch event.
        self.wake: Callable[[str], Awaitable[None]] | None = None
        self.passes = 0
        # Withdraw the admission of suspended jobs so that a resume queues them again. Needs a reconcile
        # that asks the hook again on resume; off by default (a resumed job keeps its admission).
        self.requeue_suspended = False
        self._granted: dict[str, AdmissionDecision] = {}  # admitted by a pass, not yet asked for
        self._lock = asyncio.Lock()
        self._started = 0  # passes started (a ticket for coalescing)
        self._result: AdmissionResult | None = None
        self._result_id = 0
        self._specs: dict[str, tuple[Any, FinetuneJobSpec | None]] = {}
        self.cache = JobCache()
        self.writer = AdmissionWriter(kube, self.cache)
        self.relist_seconds = RELIST_SECONDS
        self.relists = 0
        self._listed_at = -math.inf  # time.monotonic() when the last LIST of the jobs started
        self._views: dict[str, tuple[Any, JobView]] = {}  # uid -> (version key, view)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_change = False
        self._quota_generations: dict[str, Any] = {}
        # The TrainingQuotas, watch-fed (observe_quota) and refreshed by every LIST of them: while it holds
        # none, admission is immediate and costs no request (nothing to write, nothing to list).
        self.quotas = JobCache()
        self._quotas_listed_at = -math.inf
        self._quotas_lock = asyncio.Lock()  # concurrent first admissions share one LIST
        kube.register("priorityclasses", "scheduling.k8s.io", "v1", False)

    # --- wiring ---------------------------------------------------------------------------------------

    @classmethod
    def install(cls, ctx: Any, *, clock: Clock = utc_now) -> QuotaController:
        """Create a controller for an OperatorContext and make it the admission hook (``ctx.admit``)."""
        # a restarted kopf run (the CRDs came back) keeps the series registered by the previous controller
        previous = ctx.quota.metrics if isinstance(ctx.quota, QuotaController) else None
        controller = cls(ctx.kube, ctx.settings, registry=ctx.metrics.registry, clock=clock, metrics=previous)

        async def wake(uid: str) -> None:
            if ctx.reconcile_cb is not None:
                await ctx.reconcile_cb(uid)

        controller.wake = wake
        ctx.admit = controller.admit
        ctx.quota = controller
        return controller

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # --- the hook -------------------------------------------------------------------------------------

    async def admit(self, job: FinetuneJob, ctx: Any = None) -> hook.AdmissionDecision:
        """The handlers' admission hook: may this job's trainer start now?"""
        del ctx
        if self.settings.kueue_mode and job.spec.run_policy.queue_name is not None:
            return hook.AdmissionDecision(
                admitted=True,
                reason="Admitted",
                message=f"handed to Kueue (LocalQueue {job.spec.run_policy.queue_name}); "
                "the trainer Job starts suspended until Kueue admits it",
            )
        if await self.no_quota():
            return hook.AdmissionDecision(admitted=True, reason="Admitted", message="no TrainingQuota exists")
        uid = job.metadata.uid or ""
        if self.cache.synced and uid not in self.cache:  # not seen on the watch yet: read it once
            fresh = await self.kube.get_or_none("finetunejobs", job.metadata.namespace, job.metadata.name)
            if fresh is not None:
                self.cache.apply(fresh)
        decision = await self.decide(uid)
        if decision is None:  # not listed (just deleted, or outside the watched namespaces)
            return hook.AdmissionDecision(
                admitted=False,
                reason="AwaitingAdmission",
                message="the job is not visible to quota admission yet",
            )
        return to_hook_decision(decision)

    async def no_quota(self) -> bool:
        """Whether no TrainingQuota exists (from the watch-fed view; one LIST when it is unsynced or older
        than ``relist_seconds``)."""

        def stale() -> bool:
            return not self.quotas.synced or time.monotonic() - self._quotas_listed_at >= self.relist_seconds

        if stale():
            async with self._quotas_lock:
                if stale():
                    await self.list_quotas()
        return len(self.quotas) == 0

    async def list_quotas(self) -> list[JsonDict]:
        """LIST the TrainingQuotas and rebuild the quota view from them."""
        started = time.monotonic()
        data = await self.kube.request("GET", "list", "trainingquotas", None)
        items: list[JsonDict] = list(data.get("items") or [])
        self.quotas.replace(items, resource_version(data))
        self._quotas_listed_at = started
        return items

    def _known_no_quota(self) -> bool:
        return self.quotas.synced and len(self.quotas) == 0

    async def decide(self, job_uid: str) -> AdmissionDecision | None:
        """The admission decision of one job, from a pass that started after this call."""
        ticket = self._started
        granted = self._granted.pop(job_uid, None)
        if granted is not None:  # persisted by an earlier pass (the annotation is the record)
            return granted
        async with self._lock:
            # this call answers for the job: a grant stored by a pass that ran while it waited (and that
            # answers it below) must not be handed out again later (say, on a resume after a release)
            self._granted.pop(job_uid, None)
            if self._result is not None and self._result_id > ticket and job_uid in self._result.decisions:
                return self._result.decisions[job_uid]
            result = await self._run_pass(skip_wake=job_uid)
        return result.decisions.get(job_uid)

    # --- capacity changes -----------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """Feed a FinetuneJob watch event into the cache; runs a pass at once when the job stopped holding
        capacity (finished, suspended, being deleted or deleted)."""
        old, accepted = self.cache.apply(body, deleted)
        if not accepted:
            return
        if deleted:
            uid = str((body.get("metadata") or {}).get("uid") or "")
            self._specs.pop(uid, None)
            self._views.pop(uid, None)
            self._granted.pop(uid, None)
        if (
            old is not None
            and holds_capacity(old)
            and (deleted or not holds_capacity(body))
            and not self._known_no_quota()  # no quota: nobody waits for capacity
        ):
            self.capacity_changed()

    async def relist(self) -> None:
        """Rebuild the job cache from a LIST (start-up, every ``relist_seconds``)."""
        started = time.monotonic()
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        lists = await asyncio.gather(
            *(self.kube.request("GET", "list", "finetunejobs", ns) for ns in namespaces)
        )
        items = [item for data in lists for item in data.get("items") or []]
        versions = [resource_version(data) for data in lists]
        known = [v for v in versions if v is not None]
        self.cache.replace(items, min(known) if len(known) == len(versions) else None)
        live = {str((b.get("metadata") or {}).get("uid") or "") for b in self.cache.bodies()}
        for memo in (self._specs, self._views, self._granted):
            for uid in set(memo) - live:
                del memo[uid]
        self._listed_at = started
        self.relists += 1

    def observe_quota(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """Feed a TrainingQuota watch event; schedules a pass when its spec changed (not its status)."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        self.quotas.apply(body, deleted)
        seen = self._quota_generations.pop(name, None) if deleted else self._quota_generations.get(name)
        if not deleted:
            self._quota_generations[name] = meta.get("generation")
        if deleted or seen != meta.get("generation"):
            self.capacity_changed()

    def capacity_changed(self) -> None:
        """Schedule :meth:`on_capacity_change` (coalesces while one is pending)."""
        if self._pending_change:
            return
        self._pending_change = True
        self._spawn(self.on_capacity_change(), "quota-capacity-change")

    async def on_capacity_change(self) -> AdmissionResult:
        """Re-run admission now and wake the jobs it admits."""
        self._pending_change = False
        async with self._lock:
            return await self._run_pass()

    async def update_quota_status(self) -> None:
        """Recompute admission (which writes every TrainingQuota's status)."""
        await self.on_capacity_change()

    # --- one pass -------------------------------------------------------------------------------------

    async def _run_pass(self, skip_wake: str | None = None) -> AdmissionResult:
        self._started += 1
        pass_id = self._started
        bodies, quotas, snapshot = await self._snapshot()
        result = decide(snapshot)
        lost = await self.writer.persist(result, bodies, snapshot.now)
        if lost:  # a job changed under us: its slot stays unused this pass (safe); look again at once
            logger.info("admission of %d job(s) lost a resourceVersion race; re-running", len(lost))
            result = drop_admissions(result, lost)
            self.capacity_changed()
        if self.requeue_suspended:
            await self.writer.release(result, bodies, self._granted)
        self.passes += 1
        self._result, self._result_id = result, pass_id
        self.metrics.observe(result)
        for decision in result.newly_admitted:
            view = next(v for v in snapshot.jobs if v.uid == decision.uid)
            self.metrics.wait.observe(max(0.0, (snapshot.now - view.created).total_seconds()))
            if decision.uid != skip_wake:
                self._granted[decision.uid] = decision
            if decision.uid != skip_wake and self.wake is not None:
                self._spawn(self.wake(decision.uid), f"quota-wake-{decision.uid}")
        await self.writer.write_quota_status(quotas, result, snapshot.now)
        self._arm_timer(result.next_check, snapshot.now)
        return result

    async def _snapshot(self) -> tuple[dict[str, Mapping[str, Any]], list[TrainingQuota], Snapshot]:
        if not self.cache.synced or time.monotonic() - self._listed_at >= self.relist_seconds:
            await self.relist()
        quotas_raw, ns_raw, pcs_raw = await asyncio.gather(
            self.list_quotas(),
            self._list_optional("namespaces"),
            self._list_optional("priorityclasses"),
        )
        now = self.clock()
        classes = {str(p["metadata"]["name"]): int(p.get("value") or 0) for p in pcs_raw}
        default = max((int(p.get("value") or 0) for p in pcs_raw if p.get("globalDefault")), default=0)
        namespaces = {str(n["metadata"]["name"]): dict(n["metadata"].get("labels") or {}) for n in ns_raw}
        bodies: dict[str, Mapping[str, Any]] = {}
        views: list[JobView] = []
        classes_key = (tuple(sorted(classes.items())), default)
        for body in self.cache.bodies():
            view = self._view_of(body, classes, default, classes_key)
            if view is None:  # an invalid spec is never admitted (the handlers report the error)
                continue
            bodies[view.uid] = body
            views.append(view)
        quotas: list[TrainingQuota] = []
        for raw in quotas_raw:
            try:
                quotas.append(parse_quota(raw))
            except SpecError as exc:
                logger.warning("ignoring TrainingQuota %s: %s", raw.get("metadata", {}).get("name"), exc)
        job_namespaces = sorted({v.namespace for v in views})
        qviews = [quota_view(q, namespaces, job_namespaces) for q in quotas]
        return bodies, quotas, Snapshot(jobs=views, quotas=qviews, now=now)

    def _view_of(
        self, body: Mapping[str, Any], classes: Mapping[str, int], default: int, classes_key: Any
    ) -> JobView | None:
        """The job's admission view, memoized per (resourceVersion, priority classes)."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        key = (resource_version(body), classes_key)
        cached = self._views.get(uid)
        if cached is not None and cached[0] == key and key[0] is not None:
            return cached[1]
        spec = self._spec_of(body)
        if spec is None:
            return None
        view = job_view_from_body(
            body,
            spec,
            priority_classes=classes,
            default_priority=default,
            kueue_mode=self.settings.kueue_mode,
        )
        self._views[uid] = (key, view)
        return view

    async def _list_optional(self, resource: str) -> list[JsonDict]:
        """Namespaces and PriorityClasses may be unreadable (RBAC) or absent: treat as empty."""
        try:
            return await self.kube.list(resource)
        except ApiError as exc:
            logger.debug("cannot list %s (%s): treating as empty", resource, exc)
            return []

    def _spec_of(self, body: Mapping[str, Any]) -> FinetuneJobSpec | None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        key = meta.get("generation") or meta.get("resourceVersion")
        cached = self._specs.get(uid)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            spec: FinetuneJobSpec | None = FinetuneJobSpec.model_validate(body.get("spec") or {})
        except ValueError:
            spec = None
        self._specs[uid] = (key, spec)
        return spec

    def _arm_timer(self, when: datetime | None, now: datetime) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is None:
            return
        delay = max(0.0, (when - now).total_seconds()) + 0.05
        self._timer = asyncio.get_running_loop().call_later(delay, self.capacity_changed)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        spawn_logged(self._tasks, coro, name, logger)
