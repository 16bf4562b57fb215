"""kopf handlers, thin: every trigger ends in the one `reconcile` of a FinetuneJob.

* FinetuneJob watch events refresh the cache; an in-cluster job is reconciled from the event when its essence
  changed (kopf keeps no diffbase for it), a hosted job from kopf's resume / create / update handlers.
* Events of owned batch Jobs and Pods (our labels) -> cache, then reconcile the owner.
* A periodic resync (settings.resync_period_seconds) reconciles every known job: level-based recovery of
  anything a missed event left behind, TTLs after a restart included. It is a plain background loop rather
  than a kopf timer, because kopf puts a finalizer on every object that has a timer; the only finalizer is
  the one of hosted jobs (remote cancel on deletion).
* Handler results are never stored (every handler returns None), and kopf's own bookkeeping lives in
  annotations under `finetune.dev/` (see main.configure_kopf).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..api.common import GROUP, VERSION
from ..api.finetunejob import PLURAL
from ..config import Settings
from ..kube import Connection
from ..login import login as login_via_client
from ..login import relogin
from ..naming import LABEL_JOB_UID, LABEL_MANAGED_BY, MANAGED_BY
from ..quota_controller import QuotaController
from ..quota_handlers import register_quota
from .context import OperatorContext
from .reconcile import cancel_hosted, hosted, post_event, reconcile, reconcile_uid

logger = logging.getLogger(__name__)

CANCEL_TRIES = 3  # remote cancel attempts on deletion of a hosted job before the finalizer is released

__all__ = ["OperatorContext", "build_registry"]


def _ctx(memo: Any) -> OperatorContext:
    ctx = memo.ctx
    assert isinstance(ctx, OperatorContext)
    return ctx


def _hosted(body: kopf.Body, **_: Any) -> bool:
    return hosted(body)


async def _resync_loop(ctx: OperatorContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.resync_period_seconds)
        for uid in list(ctx.cache.jobs):
            await reconcile_uid(ctx, uid)


def build_registry(settings: Settings) -> kopf.OperatorRegistry:
    """A fresh registry with the operator's handlers (no global state: tests can run several operators)."""
    registry = kopf.OperatorRegistry()
    del settings  # read from the memo at run time
    # TrainingQuota admission: its startup handler installs the QuotaController as ctx.admit (and ctx.quota),
    # its watches run admission when capacity frees. Registered first, so that its startup runs first.
    register_quota(registry)

    @kopf.on.startup(registry=registry)
    async def startup(memo: Any, **_: Any) -> None:
        ctx = _ctx(memo)
        ctx.reconcile_cb = lambda uid: reconcile_uid(ctx, uid)
        if isinstance(ctx.quota, QuotaController) and hasattr(ctx.quota, "requeue_suspended"):
            # reconcile asks admission again on resume, so a suspended job may give its capacity back
            ctx.quota.requeue_suspended = True
        ctx.spawn(_resync_loop(ctx), name="resync")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await _ctx(memo).stop_tasks()  # before kopf's shutdown treats them as hung

    @kopf.on.login(registry=registry)
    async def login(memo: Any, settings: kopf.OperatorSettings, logger: Any, **_: Any) -> Any:
        # through the `kubernetes` package: exec plugins (EKS, GKE, AKS), OIDC, client certificates
        ctx = _ctx(memo)
        info = await login_via_client(ctx.settings, settings, logger)
        if info is not None:
            ctx.kube.configure(Connection.from_kopf(info))
            ctx.kube.reauthenticate = relogin(ctx.settings, settings)
        return info

    @kopf.on.probe(id="alive", registry=registry)
    def alive(**_: Any) -> bool:
        return True

    # Hosted jobs: kopf's resume / create / update handlers, after kopf has put the finalizer on (the
    # remote run is started only once its cancel on deletion is guaranteed).
    @kopf.on.resume(GROUP, VERSION, PLURAL, when=_hosted, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, when=_hosted, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, when=_hosted, registry=registry)
    async def changed(body: kopf.Body, memo: Any, **_: Any) -> None:
        await reconcile(_ctx(memo), dict(body))

    # In-cluster jobs: reconciled from the watch event itself when the job's essence (what kopf's update
    # handler would react to: spec, labels, annotations) differs from the one last reconciled -- the
    # first event of a job (created, or listed at start-up) included. kopf stores nothing for them: no
    # last-handled-configuration annotation, one PATCH per job less.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def job_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        ctx = _ctx(memo)
        obj: dict[str, Any] = dict(event["object"])
        uid = str(obj.get("metadata", {}).get("uid", ""))
        if event["type"] == "DELETED":
            ctx.forget(uid)
            return
        ctx.cache.put_job(obj)
        if not hosted(obj) and ctx.essence_changed(uid, obj):
            await reconcile(ctx, obj)

    @kopf.on.delete(GROUP, VERSION, PLURAL, when=_hosted, registry=registry)
    async def deleted_hosted(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
        # Deletion waits for the remote cancel, but never forever: CANCEL_TRIES bounded tries, then a
        # Warning Event and the finalizer is released (the FinetuneJob goes away).
        ctx = _ctx(memo)
        try:
            await asyncio.wait_for(cancel_hosted(ctx, dict(body)), ctx.settings.hosted_cancel_timeout_seconds)
        except Exception as exc:
            detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]
            if retry + 1 < CANCEL_TRIES:
                raise kopf.TemporaryError(
                    f"remote cancel failed ({detail})", delay=ctx.settings.hosted_poll_seconds
                ) from None
            await post_event(
                ctx,
                dict(body),
                "Warning",
                "RemoteCancelFailed",
                f"could not cancel the remote job after {CANCEL_TRIES} tries ({detail}); the FinetuneJob is "
                "released anyway: cancel the job at the provider if it still runs",
            )

    async def child_event(event: kopf.RawEvent, memo: Any) -> None:
        ctx = _ctx(memo)
        obj: dict[str, Any] = dict(event["object"])
        owner = (obj.get("metadata", {}).get("labels") or {}).get(LABEL_JOB_UID)
        if not owner:
            return
        news = ctx.cache.put_child(owner, obj, deleted=event["type"] == "DELETED")
        # a version the cache had already was put there by the reconcile that acted on it
        if news and owner in ctx.cache.jobs:
            await reconcile_uid(ctx, owner)

    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def trainer_job_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        await child_event(event, memo)

    @kopf.on.event("v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def trainer_pod_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        await child_event(event, memo)

    return registry
