"""A 2-node FinetuneJob against the emulator with the real operator: the headless Service and the Indexed Job
of the attempt, per-pod readiness in status.distributed, success only once every index succeeded (the result
from rank 0's pod), and deleting the FinetuneJob removes every child, the Service included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration import operator_support as ops

from finetune_operator import rbac_requirements

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def two_node_job() -> dict[str, Any]:
    job = ops.st_job()
    job["spec"]["placement"]["nodes"] = 2
    return job


def pods_of_attempt(cluster: Any, attempt: int) -> list[dict[str, Any]]:
    pods = [
        p
        for p in cluster.store.list("pods", ops.NS)
        if (p["metadata"].get("labels") or {}).get("job-name") == f"ft-a{attempt}"
        and not p["metadata"].get("deletionTimestamp")
    ]
    return sorted(
        pods, key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
    )


async def test_two_node_attempt_and_cleanup(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    op = await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(two_node_job())
    pods: list[dict[str, Any]] = await eventually(
        lambda: pods_of_attempt(cluster, 1) if len(pods_of_attempt(cluster, 1)) == 2 else None
    )
    service = cluster.store.get("services", ops.NS, "ft-a1")
    assert service is not None and service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["kind"] == "FinetuneJob"
    assert [p["spec"]["hostname"] for p in pods] == ["ft-a1-0", "ft-a1-1"]
    assert {p["spec"]["subdomain"] for p in pods} == {"ft-a1"}
    tjob = cluster.store.get("jobs", ops.NS, "ft-a1")
    assert tjob["spec"]["completionMode"] == "Indexed"

    await kubelet.run(pods[0])
    status = await ops.wait_phase(cluster, "Running")

    def one_ready() -> bool:
        dist = ops.status_of(cluster).get("distributed") or {}
        return dist.get("nodesReady") == 1 and len(dist.get("pods") or []) == 2

    await eventually(one_ready)
    status = ops.status_of(cluster)
    assert status["distributed"]["worldSize"] == 2 and "(1/2 trainer pods ready)" in status["message"]

    await kubelet.run(pods[1])
    await kubelet.succeed(pods[1])  # rank 1 finishes first, with no result: the attempt goes on
    await asyncio.sleep(1.0)
    assert ops.status_of(cluster)["phase"] == "Running"
    await kubelet.succeed(pods[0], message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status["metrics"]["after"]["mrrAt10"] == 0.71  # rank 0's result
    assert status["distributed"]["pods"] == [] and status["distributed"]["nodesReady"] == 0  # finished

    await cluster.delete("finetunejobs", ops.NS, "ft")
    for plural in ("jobs", "pods", "services", "serviceaccounts", "roles", "rolebindings"):
        await eventually(lambda plural=plural: not cluster.store.list(plural, ops.NS), timeout=5)
    await asyncio.sleep(1.0)
    assert ops.created(cluster, "services") == ["ft-a1"]
    made = {rbac_requirements.permission_of(c) for c in op.calls}
    assert rbac_requirements.Permission("", "services", "create") in made
    assert rbac_requirements.uncovered(op.calls, peering=False, kueue=False, clusterwide=True) == []
