"""JobCache: the informer-style cache of FinetuneJob bodies that quota admission reads."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_operator.quota.cache import JobCache, resource_version

pytestmark = [pytest.mark.unit]


def body(uid: str, rv: int | None, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": uid, "namespace": "default"}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    return {"metadata": meta, "status": status}


def phases(cache: JobCache) -> dict[str, Any]:
    return {b["metadata"]["uid"]: b["status"].get("phase") for b in cache.bodies()}


def test_newer_versions_replace_older_ones_never_the_reverse() -> None:
    cache = JobCache()
    assert cache.apply(body("a", 5, phase="Queued")) == (None, True)
    old, accepted = cache.apply(body("a", 7, phase="Running"))
    assert accepted and old is not None and old["status"]["phase"] == "Queued"
    # a watch event older than the write response already applied
    assert cache.apply(body("a", 6, phase="Queued"))[1] is False
    assert phases(cache) == {"a": "Running"}
    assert cache.apply(body("a", 7, phase="Running"))[1] is True  # the same version again is harmless


def test_deletion_leaves_a_tombstone() -> None:
    cache = JobCache()
    cache.apply(body("a", 5))
    old, accepted = cache.apply(body("a", 9), deleted=True)
    assert accepted and old is not None and "a" not in cache
    assert cache.apply(body("a", 8, phase="Running"))[1] is False  # an event from before the deletion
    cache.replace([body("a", 8)], list_version=8)  # a LIST served before the deletion
    assert "a" not in cache


def test_replace_drops_jobs_missing_from_the_list_but_keeps_newer_ones() -> None:
    cache = JobCache()
    assert not cache.synced
    cache.apply(body("gone", 3))  # deleted while the watch was down: the list no longer shows it
    cache.apply(body("new", 12))  # created after the LIST was served
    cache.apply(body("b", 11, phase="Running"))  # newer than the listed copy
    cache.replace([body("b", 4, phase="Queued"), body("c", 6)], list_version=10)
    assert cache.synced
    assert phases(cache) == {"b": "Running", "c": None, "new": None}


def test_tombstones_are_forgotten_once_a_list_no_longer_shows_the_job() -> None:
    cache = JobCache()
    cache.apply(body("a", 5))
    cache.apply(body("a", 6), deleted=True)
    cache.replace([], list_version=7)
    assert cache._tombstones == {}  # bounded: no growth over the operator's lifetime
    cache.apply(body("b", 8))
    cache.apply(body("b", 9), deleted=True)
    cache.replace([], list_version=8)  # a list older than the deletion: keep the tombstone
    assert set(cache._tombstones) == {"b"}


def test_unknown_versions_are_accepted_in_arrival_order() -> None:
    cache = JobCache()
    cache.apply(body("a", None, phase="Queued"))
    cache.apply(body("a", None, phase="Running"))
    assert phases(cache) == {"a": "Running"}
    assert resource_version(body("a", None)) is None
    assert resource_version({"metadata": {"resourceVersion": "x1"}}) is None
    assert resource_version(body("a", 42)) == 42
