"""The quota controller's writes: admissions persisted on the FinetuneJobs (``finetune.dev/admitted-at`` with a
``resourceVersion`` precondition), releases of suspended jobs, and the TrainingQuota statuses. Every response
goes into the controller's job cache at once; a 409 re-reads the stale job."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .api.trainingquota import TrainingQuota
from .kube import Conflict, KubeClient, NotFound
from .quota import (
    ADMITTED_AT,
    ADMITTED_BY,
    AdmissionDecision,
    AdmissionResult,
    format_time,
    quota_status,
    status_changed,
)
from .quota.cache import JobCache
from .quota_decisions import releasable

PERSIST_CONCURRENCY = 32
RELEASE_TRIES = 3  # writes of one release (a 409 re-reads the job and tries again)


class AdmissionWriter:
    """Writes of one QuotaController, through its API client, into its job cache."""

    def __init__(self, kube: KubeClient, cache: JobCache) -> None:
        self.kube = kube
        self.cache = cache

    async def persist(
        self, result: AdmissionResult, bodies: Mapping[str, Mapping[str, Any]], now: datetime
    ) -> set[str]:
        """Write the admissions of this pass (resourceVersion precondition); returns the uids that failed.

        Each write's response goes into the cache at once (the next pass must count the admission even
        before its watch event arrives); a 409 refreshes the stale cached job from the API server."""
        lost: set[str] = set()
        gate = asyncio.Semaphore(PERSIST_CONCURRENCY)

        async def one(decision: AdmissionDecision) -> None:
            meta = bodies[decision.uid]["metadata"]
            patch = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {
                        ADMITTED_AT: format_time(now),
                        ADMITTED_BY: ",".join(decision.quotas) or "none",
                    },
                }
            }
            async with gate:
                try:
                    written = await self.kube.patch("finetunejobs", decision.namespace, decision.name, patch)
                except Conflict:
                    lost.add(decision.uid)
                    await self.refresh(bodies[decision.uid])
                except NotFound:
                    lost.add(decision.uid)
                    self.cache.apply(bodies[decision.uid], deleted=True)
                else:
                    self.cache.apply(written)

        await asyncio.gather(*(one(d) for d in result.newly_admitted))
        return lost

    async def refresh(self, body: Mapping[str, Any]) -> None:
        """Re-read one job whose cached body proved stale (a 409 on the resourceVersion precondition)."""
        meta = body.get("metadata") or {}
        fresh = await self.kube.get_or_none("finetunejobs", meta.get("namespace"), str(meta.get("name")))
        if fresh is None or str((fresh.get("metadata") or {}).get("uid")) != str(meta.get("uid")):
            self.cache.apply(body, deleted=True)
            if fresh is not None:
                self.cache.apply(fresh)
        else:
            self.cache.apply(fresh)

    async def release(
        self,
        result: AdmissionResult,
        bodies: Mapping[str, Mapping[str, Any]],
        granted: dict[str, AdmissionDecision],
    ) -> None:
        """Withdraw the admission of suspended jobs, so that resuming them queues them again."""
        for uid in result.releases:
            granted.pop(uid, None)
            body: Mapping[str, Any] | None = bodies[uid]
            # a 409 (the job changed: a status write, the resume itself) re-reads it and tries again while
            # it is still suspended with the annotation; a lost release would count it as admitted later
            for _ in range(RELEASE_TRIES):
                if body is None or not releasable(body):
                    break
                meta = body["metadata"]
                patch = {
                    "metadata": {
                        "resourceVersion": meta["resourceVersion"],
                        "annotations": {ADMITTED_AT: None, ADMITTED_BY: None},
                    }
                }
                try:
                    self.cache.apply(
                        await self.kube.patch("finetunejobs", meta.get("namespace"), meta["name"], patch)
                    )
                    break
                except Conflict:
                    await self.refresh(body)
                    body = self.cache.get(uid)
                except NotFound:
                    self.cache.apply(body, deleted=True)
                    break

    async def write_quota_status(
        self, quotas: list[TrainingQuota], result: AdmissionResult, now: datetime
    ) -> None:
        for quota in quotas:
            status = quota_status(quota, result, now)
            if not status_changed(quota.status, status):
                continue
            try:
                await self.kube.patch_status("trainingquotas", None, quota.metadata.name, status.to_json())
            except NotFound:
                continue
