"""In-cluster observation from the watch cache: when the pods are read from the API, and when not.

Also the essence that decides whether a FinetuneJob watch event calls for a reconcile.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from finetune_operator.api import parse_job
from finetune_operator.backends import incluster
from finetune_operator.backends.incluster import InClusterBackend
from finetune_operator.config import Settings
from finetune_operator.handlers.context import OperatorContext, essence

pytestmark = pytest.mark.unit

OWNER = "owner-uid"
BODY: dict[str, Any] = {
    "apiVersion": "finetune.dev/v1alpha1",
    "kind": "FinetuneJob",
    "metadata": {"name": "j", "namespace": "ns", "uid": OWNER, "resourceVersion": "1"},
    "spec": {
        "engine": {"adapter": {}},
        "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
        "output": {"storageUri": "pvc://models/j"},
    },
}


class FakeKube:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.lists: list[tuple[str, str | None, str | None]] = []

    async def list(self, resource: str, namespace: str | None, label_selector: str | None = None) -> Any:
        self.lists.append((resource, namespace, label_selector))
        return copy.deepcopy(self.pods)


def trainer_job(conditions: list[str]) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-01-01T00:00:00Z", "active": 0 if conditions else 1}
    status["conditions"] = [{"type": c, "status": "True", "reason": c} for c in conditions]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j-a1", "namespace": "ns", "uid": "job-uid", "resourceVersion": "5"},
        "status": status,
    }


def pod(phase: str, message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "startTime": "2026-01-01T00:00:01Z"}
    if phase == "Succeeded":
        term = {"exitCode": 0, "reason": "Completed", "message": message}
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "j-a1-abcde",
            "namespace": "ns",
            "uid": "pod-uid",
            "resourceVersion": "6",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"job-name": "j-a1"},
        },
        "status": status,
    }


def setup(tjob: dict[str, Any], cached: list[dict[str, Any]], api: list[dict[str, Any]]) -> Any:
    ctx = OperatorContext(settings=Settings())
    kube = FakeKube(api)
    ctx.kube = kube  # type: ignore[assignment]
    ctx.cache.put_child(OWNER, tjob, deleted=False)
    for p in cached:
        ctx.cache.put_child(OWNER, p, deleted=False)
    return ctx, kube, InClusterBackend(ctx), parse_job(BODY)


async def test_running_job_whose_pod_is_not_seen_yet_is_not_listed() -> None:
    _, kube, backend, job = setup(trainer_job([]), [], [pod("Running")])
    obs = await backend.observe(job, 1)
    assert obs.state == "pending"
    assert kube.lists == []  # the pod's watch event reconciles again


async def test_finished_job_waits_for_its_pods_event_then_reads_the_api() -> None:
    result = '{"status": "succeeded"}'
    ctx, kube, backend, job = setup(trainer_job(["Complete"]), [pod("Running")], [pod("Succeeded", result)])
    obs = await backend.observe(job, 1)
    assert obs.state == "running"  # not finished before the pod (and its result) is seen
    assert kube.lists == []
    assert OWNER in ctx.wakeups  # a look again when the grace ends
    backend._awaiting_pods["job-uid"] -= incluster.POD_EVENT_GRACE_SECONDS + 1  # the grace is over
    obs = await backend.observe(job, 1)
    assert kube.lists == [("pods", "ns", "job-name=j-a1")]
    assert obs.state == "succeeded"
    assert obs.result == {"status": "succeeded"}
    await ctx.stop_tasks()


async def test_finished_job_with_its_finished_pod_seen_reads_nothing() -> None:
    ctx, kube, backend, job = setup(trainer_job(["Complete"]), [pod("Succeeded", "{}")], [])
    obs = await backend.observe(job, 1)
    assert obs.state == "succeeded"
    assert kube.lists == []
    assert ctx.wakeups == {}


async def test_finished_job_with_no_pod_seen_reads_the_api_at_once() -> None:
    _, kube, backend, job = setup(trainer_job(["Failed"]), [], [])
    obs = await backend.observe(job, 1)
    assert kube.lists == [("pods", "ns", "job-name=j-a1")]
    assert obs.state == "failed"


def test_essence_ignores_status_and_bookkeeping_but_not_intent() -> None:
    base = copy.deepcopy(BODY)
    changed = copy.deepcopy(base)
    changed["status"] = {"phase": "Running"}
    changed["metadata"]["resourceVersion"] = "9"
    changed["metadata"]["annotations"] = {"finetune.dev/last-handled-configuration": "{}"}
    assert essence(changed) == essence(base)
    spec = copy.deepcopy(base)
    spec["spec"]["runPolicy"] = {"suspend": True}
    assert essence(spec) != essence(base)
    labelled = copy.deepcopy(base)
    labelled["metadata"]["labels"] = {"team": "a"}
    assert essence(labelled) != essence(base)


async def test_essence_changed_until_reconciled() -> None:
    ctx = OperatorContext(settings=Settings())
    assert ctx.essence_changed(OWNER, BODY)
    ctx.reconciling(OWNER, BODY)
    assert not ctx.essence_changed(OWNER, {**BODY, "status": {"phase": "Pending"}})
    ctx.forget(OWNER)
    assert ctx.essence_changed(OWNER, BODY)
