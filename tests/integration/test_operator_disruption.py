"""The real kopf operator against the emulator: an eviction through the Eviction API (pods/eviction, as
`kubectl drain` does) ends the attempt by a disruption -- DisruptionTarget, a graceful delete, the kubelet's
SIGTERM -- and the next attempt resumes from the newest checkpoint without counting a failure, with an
AttemptDisrupted Event that names the pod, the reason and the checkpoint."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration import operator_support as ops

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CHECKPOINT = "pvc://models/runs/default/ft/checkpoints/checkpoint-20"


def _events(cluster: Any, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.store.list("events", ops.NS)
        if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == "ft"
    ]


async def test_eviction_api_resumes_from_checkpoint_without_a_failure(
    cluster: Any, operator_factory: Any, kubelet: Any
) -> None:
    await operator_factory()
    pod = await ops.start_running(cluster, kubelet, ops.st_job(backoffLimit=0))
    # the trainer reports its checkpoint (as it does through the status subresource)
    await cluster.patch(
        "finetunejobs",
        ops.NS,
        "ft",
        {"status": {"checkpoints": {"latest": {"step": 20, "uri": CHECKPOINT}}}},
        subresource="status",
    )
    await eventually(lambda: (ops.status_of(cluster).get("checkpoints") or {}).get("latest"))
    name = pod["metadata"]["name"]
    await cluster.evict(ops.NS, name)
    # the real order: DisruptionTarget, then deletionTimestamp, then terminal, then gone
    writes = [r.object for r in cluster.history if r.plural == "pods" and r.name == name]
    first_delete = next(i for i, o in enumerate(writes) if o["metadata"].get("deletionTimestamp"))
    assert any(c["type"] == "DisruptionTarget" for c in writes[first_delete - 1]["status"]["conditions"])
    pod2 = await ops.wait_pod(cluster, 2)
    await eventually(lambda: cluster.store.get("pods", ops.NS, name) is None)
    # (the attempt's Job exists before the status patch that records it)
    status = await eventually(lambda: ops.status_of(cluster).get("attempts") == 2 and ops.status_of(cluster))
    assert status.get("failedAttempts", 0) == 0
    (event,) = await eventually(lambda: _events(cluster, "AttemptDisrupted"))
    assert event["type"] == "Warning"
    message = event["message"]
    assert name in message and "EvictionByEvictionAPI" in message
    assert "step 20" in message and CHECKPOINT in message and "attempt 2 resumes" in message
    # the evicted attempt's Job failed by its podFailurePolicy's DisruptionTarget rule, not by backoff
    failed = next(
        c for c in cluster.store.get("jobs", ops.NS, "ft-a1")["status"]["conditions"] if c["type"] == "Failed"
    )
    assert failed["reason"] == "PodFailurePolicy" and "DisruptionTarget" in failed["message"]
    await kubelet.run(pod2)
    await kubelet.succeed(pod2, message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status.get("failedAttempts", 0) == 0 and status["attempts"] == 2
    assert ops.created(cluster, "jobs") == ["ft-a1", "ft-a2"]
    assert len(_events(cluster, "AttemptDisrupted")) == 1
    # every status field the operator wrote is in the schema (the server would prune it, with a warning)
    assert cluster.warnings == []
