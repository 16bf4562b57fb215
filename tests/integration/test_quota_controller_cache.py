"""QuotaController's watch-fed job cache against the emulated API server (no kopf: the test delivers the
watch events the operator's FinetuneJob event handler would)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import eventually, fast_settings

from finetune_operator.kube import Connection, KubeClient
from finetune_operator.quota import ADMITTED_AT
from finetune_operator.quota_controller import QuotaController

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NS = "default"


def gpu_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "engine": {"sentenceTransformers": {}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://models/runs"},
            "placement": {"resources": {"gpu": {"count": 1}}},
        },
    }


async def gpu_quota(cluster: Any, gpus: int) -> None:
    await cluster.create(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "TrainingQuota",
            "metadata": {"name": "gpus"},
            "spec": {"limits": {"gpus": [{"resourceName": "nvidia.com/gpu", "count": gpus}]}},
        }
    )


def admitted(cluster: Any) -> list[str]:
    return sorted(
        o["metadata"]["name"]
        for o in cluster.store.list("finetunejobs", NS)
        if ADMITTED_AT in (o["metadata"].get("annotations") or {})
    )


def current(cluster: Any, name: str) -> Any:
    return cluster.store.get("finetunejobs", NS, name)


@pytest.fixture
async def kube(cluster: Any) -> AsyncIterator[KubeClient]:
    client = KubeClient(Connection(server=cluster.url, insecure=True))
    yield client
    await client.close()


async def test_freed_slot_admits_the_next_job_from_the_watch_event(cluster: Any, kube: KubeClient) -> None:
    await gpu_quota(cluster, 1)
    for name in ("a", "b"):
        await cluster.create(gpu_job(name))
    controller = QuotaController(kube, fast_settings(cluster.url))
    try:
        await controller.on_capacity_change()
        assert admitted(cluster) == ["a"]
        passes = controller.passes
        finished = await cluster.patch(
            "finetunejobs", NS, "a", {"status": {"phase": "Succeeded"}}, subresource="status"
        )
        controller.observe(finished)  # the watch event alone triggers the next pass
        await eventually(lambda: admitted(cluster) == ["a", "b"], timeout=5)
        assert controller.passes == passes + 1
        assert controller.relists == 1  # from the cache: no LIST of the jobs after start-up
        assert controller.cache.get(current(cluster, "b")["metadata"]["uid"]) is not None
    finally:
        await controller.close()


async def test_a_stale_cache_loses_the_precondition_then_refreshes_and_admits(
    cluster: Any, kube: KubeClient
) -> None:
    await gpu_quota(cluster, 2)
    created = await cluster.create(gpu_job("a"))
    controller = QuotaController(kube, fast_settings(cluster.url))
    try:
        await controller.relist()
        # changed behind the controller's back (its watch event is not delivered yet)
        await cluster.patch("finetunejobs", NS, "a", {"metadata": {"labels": {"team": "x"}}})
        decision = await controller.decide(created["metadata"]["uid"])
        assert decision is not None and not decision.admitted  # the write hit a 409: decided again
        await eventually(lambda: admitted(cluster) == ["a"], timeout=5)  # ... by the re-run pass
        cached = controller.cache.get(created["metadata"]["uid"])
        assert cached is not None and cached["metadata"]["labels"] == {"team": "x"}
        writes = [r for r in cluster.history if r.plural == "finetunejobs" and r.verb == "patch"]
        assert len(writes) == 2  # the label, then one admission write (the first one was refused)
        assert controller.passes == 2
    finally:
        await controller.close()


async def test_restarted_controller_rebuilds_usage_from_the_cluster(cluster: Any, kube: KubeClient) -> None:
    await gpu_quota(cluster, 2)
    for i in range(5):
        await cluster.create(gpu_job(f"j{i}"))
    first = QuotaController(kube, fast_settings(cluster.url))
    await first.on_capacity_change()
    await first.close()
    assert admitted(cluster) == ["j0", "j1"]
    second = QuotaController(kube, fast_settings(cluster.url))  # a fresh process: empty cache
    try:
        result = await second.on_capacity_change()
        assert admitted(cluster) == ["j0", "j1"]  # no over-admission
        assert sorted(d.name for d in result.queued) == ["j2", "j3", "j4"]
        assert [d.queue_position for d in result.queued] == [1, 2, 3]
    finally:
        await second.close()


async def test_relist_repairs_a_missed_deletion(cluster: Any, kube: KubeClient) -> None:
    await gpu_quota(cluster, 1)
    for name in ("a", "b"):
        await cluster.create(gpu_job(name))
    controller = QuotaController(kube, fast_settings(cluster.url))
    try:
        await controller.on_capacity_change()
        await cluster.delete("finetunejobs", NS, "a")  # the DELETED event is lost
        result = await controller.on_capacity_change()
        assert admitted(cluster) == []  # the cache still counts a: b waits
        assert [d.name for d in result.queued] == ["b"]
        controller.relist_seconds = 0.0  # relist period elapsed
        await controller.on_capacity_change()
        assert admitted(cluster) == ["b"]
        assert controller.relists >= 2
    finally:
        await controller.close()
