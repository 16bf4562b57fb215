"""What the handlers share for one operator run (kept in kopf's memo as `memo.ctx`).

Settings, the API client, metrics, the admission hook and backends, a cache of the FinetuneJobs and their
owned Jobs and Pods (filled from kopf's watch events, like an informer), per-job locks and wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..admission import AdmitFn, admit
from ..aio import spawn_logged
from ..backends.registry import BackendRegistry, default_registry
from ..config import Settings
from ..kube import JsonDict, KubeClient
from ..metrics import Metrics
from ..naming import ANNOTATION_PREFIX

logger = logging.getLogger(__name__)


@dataclass
class ChildCache:
    """Owned batch Jobs and Pods by FinetuneJob uid, and the latest FinetuneJob bodies."""

    jobs: dict[str, JsonDict] = field(default_factory=dict)  # finetunejob uid -> body
    children: dict[str, dict[tuple[str, str], JsonDict]] = field(default_factory=dict)

    def put_job(self, body: JsonDict) -> None:
        uid = str(body.get("metadata", {}).get("uid", ""))
        if uid:
            old = self.jobs.get(uid)
            if old is None or _rv(body) >= _rv(old):
                self.jobs[uid] = body

    def drop_job(self, uid: str) -> None:
        self.jobs.pop(uid, None)
        self.children.pop(uid, None)

    def put_child(self, owner_uid: str, body: JsonDict, deleted: bool) -> bool:
        """Cache a child's state; returns whether it is news (not a version the cache already had, such
        as the watch event of the Job that this operator created and cached from the response)."""
        key = (str(body.get("kind")), str(body.get("metadata", {}).get("name")))
        bucket = self.children.setdefault(owner_uid, {})
        if deleted:
            return bucket.pop(key, None) is not None
        old = bucket.get(key)
        if old is None or old["metadata"].get("uid") != body["metadata"].get("uid"):
            bucket[key] = body
            return True
        if _rv(body) >= _rv(old):
            bucket[key] = body
            return _rv(body) != _rv(old) or _rv(body) == 0
        return False

    def child(self, owner_uid: str, kind: str, name: str) -> JsonDict | None:
        return self.children.get(owner_uid, {}).get((kind, name))

    def pods_of(self, owner_uid: str, job_name: str) -> list[JsonDict]:
        return [
            body
            for (kind, _), body in self.children.get(owner_uid, {}).items()
            if kind == "Pod" and (body.get("metadata", {}).get("labels") or {}).get("job-name") == job_name
        ]


# annotations that are bookkeeping, not intent (as kopf leaves them out of its diffbase essence)
_BOOKKEEPING_ANNOTATIONS = (
    f"{ANNOTATION_PREFIX}/last-handled-configuration",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def essence(body: JsonDict) -> str:
    """What a change of which calls for a reconcile, as kopf's update handler sees it: everything but
    apiVersion, kind, metadata and status, plus the labels and the annotations (less bookkeeping ones)."""
    meta = body.get("metadata") or {}
    kept = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k not in _BOOKKEEPING_ANNOTATIONS and not k.startswith("kopf.zalando.org/")
    }
    return json.dumps([kept, meta.get("labels") or {}, annotations], sort_keys=True, default=str)


def _rv(body: JsonDict) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class OperatorContext:
    """Per-run state of the operator."""

    settings: Settings
    kube: KubeClient = field(default_factory=KubeClient)
    metrics: Metrics = field(default_factory=Metrics)
    backends: BackendRegistry = field(default_factory=default_registry)
    admit: AdmitFn = admit
    cache: ChildCache = field(default_factory=ChildCache)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    wakeups: dict[str, tuple[datetime, asyncio.TimerHandle]] = field(default_factory=dict)
    reconcile_cb: Callable[[str], Awaitable[None]] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    quota: Any = None  # the QuotaController, once quota_controller.register_quota's startup installed it
    essences: dict[str, str] = field(default_factory=dict)  # uid -> essence of the body last reconciled

    def essence_changed(self, uid: str, body: JsonDict) -> bool:
        """Whether the job's essence differs from the one its last reconcile acted on (none yet: True)."""
        return self.essences.get(uid) != essence(body)

    def reconciling(self, uid: str, body: JsonDict) -> None:
        """Record the essence of the body a reconcile acts on."""
        self.essences[uid] = essence(body)

    def reset_watch_state(self) -> None:
        """Forget what the watches told (before kopf starts again and lists everything afresh)."""
        for uid in list(self.cache.jobs):
            self.forget(uid)
        self.cache = ChildCache()
        self.essences.clear()

    def lock(self, uid: str) -> asyncio.Lock:
        lock = self.locks.get(uid)
        if lock is None:
            lock = self.locks[uid] = asyncio.Lock()
        return lock

    def forget(self, uid: str) -> None:
        self.cache.drop_job(uid)
        self.essences.pop(uid, None)
        self.locks.pop(uid, None)
        self.cancel_wakeup(uid)
        self.metrics.set_phase(uid, None)

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        spawn_logged(self.tasks, coro, name, logger)

    def wake_at(self, uid: str, when: datetime, now: datetime) -> None:
        """Reconcile the job at `when` (keeps only the earliest pending wake-up per job)."""
        current = self.wakeups.get(uid)
        if current is not None and current[0] <= when:
            return
        self.cancel_wakeup(uid)
        delay = max(0.0, (when - now).total_seconds()) + 0.05
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, self._fire, uid)
        self.wakeups[uid] = (when, handle)

    def cancel_wakeup(self, uid: str) -> None:
        current = self.wakeups.pop(uid, None)
        if current is not None:
            current[1].cancel()

    def _fire(self, uid: str) -> None:
        self.wakeups.pop(uid, None)
        if self.reconcile_cb is not None:
            self.spawn(self.reconcile_cb(uid), name=f"wakeup-{uid}")

    async def close(self) -> None:
        await self.stop_tasks()
        await self.kube.close()

    async def stop_tasks(self) -> None:
        self.reconcile_cb = None
        for _, handle in self.wakeups.values():
            handle.cancel()
        self.wakeups.clear()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
