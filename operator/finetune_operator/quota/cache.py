"""An informer-style cache of FinetuneJob bodies for quota admission. Pure: no I/O, no clock.

The quota controller keeps the latest body of every FinetuneJob it may admit, like the informers of the
Kubernetes schedulers (kube-scheduler, Kueue): the cache is filled from one LIST at start-up
(:meth:`JobCache.replace`), kept current by the watch stream (:meth:`JobCache.apply`, fed by the
operator's FinetuneJob watch) and by the controller's own write responses, and rebuilt from a LIST again
from time to time (a relist repairs anything a lost watch event left behind). Usage is still derived
from these cluster objects on every pass; nothing is counted separately. The admission annotation,
written with a ``resourceVersion`` precondition, stays the source of truth: a stale cache only makes
that write fail with 409, and the controller then refreshes the object and decides again.

Ordering: a body replaces the cached one only when its ``resourceVersion`` is not older (watch events may
arrive after the response of the write that produced them). A deleted job leaves a tombstone so that a
LIST that started before the deletion cannot bring it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

Body = Mapping[str, Any]


def resource_version(body: Body) -> int | None:
    """The ``resourceVersion`` as an integer (etcd revision), or None when absent or not numeric."""
    value = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def uid_of(body: Body) -> str:
    meta = body.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}")


def _newer_or_same(new: int | None, old: int | None) -> bool:
    """Whether a body with version ``new`` may replace one with ``old`` (unknown versions: yes)."""
    return new is None or old is None or new >= old


class JobCache:
    """The latest known FinetuneJob bodies by uid (see the module docstring)."""

    def __init__(self) -> None:
        self._bodies: dict[str, Body] = {}
        self._tombstones: dict[str, int | None] = {}  # uid -> resourceVersion of the deletion
        self.synced = False  # filled from a LIST at least once
        self.changes = 0  # bumped on every accepted change (lets callers memoize)

    def __len__(self) -> int:
        return len(self._bodies)

    def __contains__(self, uid: object) -> bool:
        return uid in self._bodies

    def get(self, uid: str) -> Body | None:
        return self._bodies.get(uid)

    def bodies(self) -> Iterator[Body]:
        return iter(list(self._bodies.values()))

    def apply(self, body: Body, deleted: bool = False) -> tuple[Body | None, bool]:
        """Apply one watch event (or a write response). Returns (previous body, accepted)."""
        uid = uid_of(body)
        version = resource_version(body)
        old = self._bodies.get(uid)
        if deleted:
            self._bodies.pop(uid, None)
            self._tombstones[uid] = version
            self.changes += 1
            return old, True
        if uid in self._tombstones:
            return old, False  # an event older than the deletion (uids are never reused)
        if old is not None and not _newer_or_same(version, resource_version(old)):
            return old, False
        self._bodies[uid] = body
        self.changes += 1
        return old, True

    def replace(self, items: Iterable[Body], list_version: int | None) -> None:
        """Rebuild from a LIST whose collection ``resourceVersion`` is ``list_version``.

        Listed bodies replace older cached ones; a cached job missing from the list is dropped unless
        the cache saw it at a version newer than the list (created or changed after the LIST was served).
        A tombstone is forgotten once a list no longer shows the job and is not older than the deletion.
        """
        listed: dict[str, Body] = {}
        seen: set[str] = set()
        for body in items:
            uid = uid_of(body)
            seen.add(uid)
            if uid in self._tombstones:
                continue
            old = self._bodies.get(uid)
            listed[uid] = (
                body if old is None or _newer_or_same(resource_version(body), resource_version(old)) else old
            )
        for uid, old in self._bodies.items():
            if uid in listed:
                continue
            version = resource_version(old)
            if list_version is not None and version is not None and version > list_version:
                listed[uid] = old  # newer than the list: keep
        self._bodies = listed
        self._tombstones = {
            uid: rv
            for uid, rv in self._tombstones.items()
            if uid in seen or (list_version is not None and rv is not None and rv > list_version)
        }
        self.synced = True
        self.changes += 1
