"""Quotas count every trainer pod's GPUs: placement.nodes x resources.gpu.count (limits and GPU-hours)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from finetune_operator.api import parse_job, parse_quota
from finetune_operator.quota import Snapshot, decide, quota_view
from finetune_operator.quota.model import job_view_from_body

pytestmark = pytest.mark.unit
T0 = datetime(2025, 1, 1, tzinfo=UTC)
GPU = "nvidia.com/gpu"


def body(name: str, nodes: int, gpus: int, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"team-a/{name}",
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "spec": {
            "engine": {"sentenceTransformers": {"model": "m", "batchSize": 64}},
            "dataset": {"train": {"configMap": {"name": "d", "key": "train.json"}}},
            "output": {"storageUri": "s3://bucket/p"},
            "placement": {"nodes": nodes, "resources": {"gpu": {"count": gpus}}},
        },
        "status": status,
    }


def view(b: dict[str, Any]) -> Any:
    return job_view_from_body(b, parse_job(b).spec)


def quota(limits: dict[str, Any]) -> Any:
    q = parse_quota({"metadata": {"name": "q", "generation": 1}, "spec": {"limits": limits}})
    return quota_view(q, {"team-a": {}}, ["team-a"])


def test_a_job_holds_nodes_times_gpus() -> None:
    assert view(body("a", 2, 4)).gpus == {GPU: 8}
    assert view(body("b", 1, 4)).gpus == {GPU: 4}
    assert view(body("c", 2, 0)).gpus == {}


def test_gpu_limit_counts_every_node() -> None:
    jobs = [view(body("big", 2, 4))]
    result = decide(
        Snapshot(jobs=jobs, quotas=[quota({"gpus": [{"resourceName": GPU, "count": 4}]})], now=T0)
    )
    decision = result.decisions["team-a/big"]
    assert not decision.admitted and "job needs 8 nvidia.com/gpu but the limit is 4" in decision.message
    result = decide(
        Snapshot(jobs=jobs, quotas=[quota({"gpus": [{"resourceName": GPU, "count": 8}]})], now=T0)
    )
    assert result.decisions["team-a/big"].admitted


def test_gpu_hours_count_every_node() -> None:
    start = T0 - timedelta(hours=1)
    done = body(
        "ran",
        2,
        4,
        phase="Succeeded",
        startTime=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        completionTime=T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    limits = {"gpuHours": [{"resourceName": GPU, "hours": 10, "window": "24h"}]}
    result = decide(Snapshot(jobs=[view(done)], quotas=[quota(limits)], now=T0))
    (usage,) = [u for u in result.quotas["q"].usage if u.key.startswith("gpuHours/")]
    assert usage.used == pytest.approx(8.0)  # 1 hour on 2 nodes x 4 GPUs
