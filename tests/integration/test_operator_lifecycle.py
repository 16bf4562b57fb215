"""The real kopf operator against the emulated API server: the main lifecycle of a FinetuneJob."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration import operator_support as ops

from finetune_operator.local.semantics import ApiError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_create_run_succeed(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    op = await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job())
    pod = await ops.wait_pod(cluster, 1)
    # the children: config, per-job RBAC and the attempt's Job, all owned by the FinetuneJob
    owner = cluster.store.get("finetunejobs", ops.NS, "ft")["metadata"]["uid"]
    for plural, name in (
        ("configmaps", "ft-trainer-config"),
        ("serviceaccounts", "ft-trainer"),
        ("roles", "ft-trainer-status"),
        ("rolebindings", "ft-trainer-status"),
        ("jobs", "ft-a1"),
    ):
        obj = cluster.store.get(plural, ops.NS, name)
        assert obj is not None, (plural, name)
        assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [owner]
    await kubelet.run(pod)
    status = await ops.wait_phase(cluster, "Running")
    assert status["attempts"] == 1 and status.get("startTime")
    await kubelet.succeed(pod, message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status["model"]["storageUri"] == "pvc://models/runs/default/ft/model"
    assert status["metrics"]["after"]["mrrAt10"] == 0.71 and status["metrics"]["before"]["mrrAt10"] == 0.52
    assert status.get("completionTime")
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds["Succeeded"] == "True" and conds["Admitted"] == "True"
    # no kopf bookkeeping in status, annotations only under our prefix
    obj = cluster.store.get("finetunejobs", ops.NS, "ft")
    assert not any(k.startswith("kopf") for k in obj.get("status", {}))
    assert not any(k.startswith("kopf.zalando.org") for k in obj["metadata"].get("annotations", {}))
    assert not obj["metadata"].get("finalizers")
    assert ops.created(cluster, "jobs") == ["ft-a1"]
    reasons = [r for _, r in await eventually(lambda: ops.events_of(cluster))]
    assert "AttemptStarted" in reasons
    # every call was recorded for the RBAC comparison
    verbs = {(c.verb, c.resource, c.subresource) for c in op.calls}
    assert ("create", "jobs", "") in verbs and ("patch", "finetunejobs", "status") in verbs


async def test_invalid_spec_fails_without_children(cluster: Any, operator_factory: Any) -> None:
    await operator_factory()
    bad = ops.st_job("bad")
    bad["spec"]["engine"]["sentenceTransformers"]["epochs"] = 0
    bad["spec"]["runPolicy"] = {"backoffLimit": -1}
    # the installed CRD refuses it at the API, naming the fields (422, as a real server)
    with pytest.raises(ApiError) as refused:
        await cluster.create(bad)
    assert refused.value.code == 422
    assert "spec.engine.sentenceTransformers.epochs" in refused.value.message
    # a job stored under a looser schema (an older CRD): the operator refuses it itself
    crd = cluster.store.get("customresourcedefinitions", None, "finetunejobs.finetune.dev")
    for version in crd["spec"]["versions"]:
        version["schema"] = {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        }
    await cluster.replace(crd)
    await cluster.create(bad)
    status = await ops.wait_phase(cluster, "Failed", name="bad")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.engine.sentenceTransformers.epochs" in status["message"]
    assert "spec.runPolicy.backoffLimit" in status["message"]
    await eventually(lambda: ("Warning", "InvalidSpec") in ops.events_of(cluster, "bad"))
    assert ops.created(cluster, "jobs") == [] and ops.created(cluster, "pods") == []
    assert ops.created(cluster, "configmaps") == []


async def test_failure_retry_then_success(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job(backoffLimit=2))
    pod = await ops.wait_pod(cluster, 1)
    await kubelet.run(pod)
    await kubelet.fail(pod, exit_code=1, message="CUDA error: out of memory")
    pod2 = await ops.wait_pod(cluster, 2)
    # the trainer Job (and so its pod) exists before the status patch that records the attempt
    status = await eventually(lambda: ops.status_of(cluster).get("attempts") == 2 and ops.status_of(cluster))
    assert status["failedAttempts"] == 1 and status["attempts"] == 2
    await kubelet.run(pod2)
    await kubelet.succeed(pod2, message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status["attempts"] == 2 and status["failedAttempts"] == 1
    assert ops.created(cluster, "jobs") == ["ft-a1", "ft-a2"]


async def test_backoff_limit_exhausted(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job(backoffLimit=1))
    for attempt in (1, 2):
        pod = await ops.wait_pod(cluster, attempt)
        await kubelet.fail(pod, exit_code=137)
    status = await ops.wait_phase(cluster, "Failed")
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "BackoffLimitExceeded"
    assert ops.created(cluster, "jobs") == ["ft-a1", "ft-a2"]


async def test_eviction_does_not_count(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job(backoffLimit=0))
    pod = await ops.wait_pod(cluster, 1)
    await kubelet.run(pod)
    await kubelet.evict(pod)
    pod2 = await ops.wait_pod(cluster, 2)
    assert ops.status_of(cluster).get("failedAttempts", 0) == 0
    await kubelet.run(pod2)
    await kubelet.succeed(pod2, message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status.get("failedAttempts", 0) == 0 and status["attempts"] == 2


async def test_invalid_data_exit_fails_at_once(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job(backoffLimit=3))
    pod = await ops.wait_pod(cluster, 1)
    await kubelet.fail(pod, exit_code=3, message='{"status": "invalid", "message": "train.json: no queries"}')
    status = await ops.wait_phase(cluster, "Failed")
    assert "no queries" in status["message"]
    assert ops.created(cluster, "jobs") == ["ft-a1"]
