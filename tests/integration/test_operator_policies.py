"""Run policies against the emulator: deadline, suspend/resume, deletion, restarts, TTL, trainer progress."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from tests.conftest import eventually
from tests.integration import operator_support as ops

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_deadline_exceeded(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await ops.start_running(cluster, kubelet, ops.st_job(activeDeadlineSeconds=2))
    status = await ops.wait_phase(cluster, "Failed", timeout=10)
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "DeadlineExceeded"
    # the running attempt was stopped
    await eventually(lambda: cluster.store.get("jobs", ops.NS, "ft-a1") is None)


async def test_suspend_and_resume(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    pod = await ops.start_running(cluster, kubelet, ops.st_job())
    await cluster.patch("finetunejobs", ops.NS, "ft", {"spec": {"runPolicy": {"suspend": True}}})
    await ops.wait_phase(cluster, "Suspended")
    # the attempt's Job (and by cascade its pod, which gets SIGTERM) is gone, nothing new started
    await eventually(lambda: cluster.store.get("jobs", ops.NS, "ft-a1") is None)
    await eventually(lambda: not cluster.store.list("pods", ops.NS))
    await asyncio.sleep(1.5)  # a resync passes without starting anything
    assert ops.status_of(cluster)["phase"] == "Suspended"
    assert ops.created(cluster, "jobs") == ["ft-a1"]
    await cluster.patch("finetunejobs", ops.NS, "ft", {"spec": {"runPolicy": {"suspend": False}}})
    pod = await eventually(lambda: next(iter(cluster.store.list("pods", ops.NS)), None))
    await kubelet.run(pod)
    await kubelet.succeed(pod, message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status.get("failedAttempts", 0) == 0


async def test_delete_while_running_leaves_nothing(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await ops.start_running(cluster, kubelet, ops.st_job())
    await cluster.delete("finetunejobs", ops.NS, "ft")
    for plural in ("jobs", "pods", "serviceaccounts", "roles", "rolebindings"):
        await eventually(lambda plural=plural: not cluster.store.list(plural, ops.NS), timeout=5)
    await eventually(lambda: cluster.store.get("configmaps", ops.NS, "ft-trainer-config") is None)
    await asyncio.sleep(1.5)  # resyncs and replayed events never recreate children
    assert ops.created(cluster, "jobs") == ["ft-a1"]
    assert cluster.store.get("configmaps", ops.NS, "ft-trainer-config") is None


async def test_restart_mid_run_no_duplicates(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    op = await operator_factory()
    pod = await ops.start_running(cluster, kubelet, ops.st_job())
    await op.stop()
    await kubelet.fail(pod, exit_code=1, message="node flake")  # happens while the operator is down
    await op.start()
    pod2 = await ops.wait_pod(cluster, 2)
    await op.restart()
    await kubelet.run(pod2)
    await kubelet.succeed(pod2, message=ops.result_json())
    await ops.wait_phase(cluster, "Succeeded")
    await op.restart()
    await asyncio.sleep(1.5)
    assert ops.created(cluster, "jobs") == ["ft-a1", "ft-a2"]
    for plural in ("configmaps", "serviceaccounts", "roles", "rolebindings"):
        names = ops.created(cluster, plural)
        assert len(names) == len(set(names)), (plural, names)
    assert ops.status_of(cluster)["phase"] == "Succeeded"


async def test_ttl_deletes_finished_job_also_after_restart(
    cluster: Any, operator_factory: Any, kubelet: Any
) -> None:
    op = await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job("short", ttlSecondsAfterFinished=1))
    await cluster.create(ops.st_job("later", ttlSecondsAfterFinished=3))
    for name in ("short", "later"):
        pod = await ops.wait_pod(cluster, 1, name=name)
        await kubelet.succeed(pod, message=ops.result_json(name))
        await ops.wait_phase(cluster, "Succeeded", name=name)
    await eventually(lambda: cluster.store.get("finetunejobs", ops.NS, "short") is None, timeout=5)
    assert cluster.store.get("finetunejobs", ops.NS, "later") is not None
    await op.restart()  # the due time comes from status.completionTime, not from memory
    await eventually(lambda: cluster.store.get("finetunejobs", ops.NS, "later") is None, timeout=8)
    await eventually(lambda: not cluster.store.list("jobs", ops.NS), timeout=5)


async def test_trainer_progress_through_status_subresource(
    cluster: Any, operator_factory: Any, kubelet: Any
) -> None:
    """The trainer PATCHes status.progress with its per-job token; the operator keeps it."""
    await operator_factory()
    pod = await ops.start_running(cluster, kubelet, ops.st_job())
    progress = {
        "step": 30,
        "totalSteps": 120,
        "percent": 25,
        "summary": "30/120 (25%)",
        "loss": 1.25,
        "stage": "train",
        "updateTime": "2026-01-01T00:00:00Z",
    }
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer per-job-token"}) as http:
        url = f"{cluster.url}/apis/finetune.dev/v1alpha1/namespaces/{ops.NS}/finetunejobs/ft/status"
        async with http.patch(
            url,
            json={"status": {"progress": progress}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            assert resp.status == 200
    await asyncio.sleep(1.5)  # resyncs and pod events do not wipe it
    assert ops.status_of(cluster)["progress"]["step"] == 30
    await kubelet.succeed(pod, message=ops.result_json())
    status = await ops.wait_phase(cluster, "Succeeded")
    assert status["progress"]["step"] == 30


# Generous waits: this test runs two operator-driven jobs through suspend/resume and is slow under load.
RESUME_WAIT = 30.0


@pytest.mark.timeout(180)
async def test_resume_asks_quota_admission_again(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    """A 1-job TrainingQuota: suspending A frees its slot for B; resuming A queues it behind B (admission is
    asked again on resume), and A resumes once B finished."""
    wait = RESUME_WAIT
    await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "TrainingQuota",
            "metadata": {"name": "one"},
            "spec": {"limits": {"maxJobs": 1}},
        }
    )
    await cluster.create(ops.st_job("a"))
    pod_a = await ops.wait_pod(cluster, 1, name="a", timeout=wait)
    await kubelet.run(pod_a)
    await ops.wait_phase(cluster, "Running", name="a", timeout=wait)
    await cluster.create(ops.st_job("b"))
    await ops.wait_phase(cluster, "Queued", name="b", timeout=wait)
    await cluster.patch("finetunejobs", ops.NS, "a", {"spec": {"runPolicy": {"suspend": True}}})
    await ops.wait_phase(cluster, "Suspended", name="a", timeout=wait)
    pod_b = await ops.wait_pod(cluster, 1, name="b", timeout=wait)  # a's slot went to b
    await kubelet.run(pod_b)
    await ops.wait_phase(cluster, "Running", name="b", timeout=wait)
    await cluster.patch("finetunejobs", ops.NS, "a", {"spec": {"runPolicy": {"suspend": False}}})

    def queued_behind_b() -> Any:
        """A's status once it is queued again: phase Queued, Admitted False for QuotaExceeded."""
        status = ops.status_of(cluster, "a")
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "Admitted"), {})
        queued = status.get("phase") == "Queued" and (cond.get("status"), cond.get("reason")) == (
            "False",
            "QuotaExceeded",
        )
        return status if queued else None

    await eventually(queued_behind_b, timeout=wait)
    await asyncio.sleep(1.5)  # resyncs pass: nothing starts for a while b holds the slot
    assert ops.created(cluster, "jobs") == ["a-a1", "b-a1"]
    assert queued_behind_b() is not None
    await kubelet.succeed(pod_b, message=ops.result_json("b"))
    await ops.wait_phase(cluster, "Succeeded", name="b", timeout=wait)

    def new_pod_of_a() -> Any:  # the attempt resumes: a new Job of the same attempt, so a new pod
        pods = [
            p
            for p in cluster.store.list("pods", ops.NS)
            if (p["metadata"].get("labels") or {}).get("job-name") == "a-a1"
            and p["metadata"]["uid"] != pod_a["metadata"]["uid"]
            and not p["metadata"].get("deletionTimestamp")
        ]
        return pods[0] if pods else None

    pod_a2 = await eventually(new_pod_of_a, timeout=wait)
    await kubelet.run(pod_a2)
    await kubelet.succeed(pod_a2, message=ops.result_json("a"))
    status = await ops.wait_phase(cluster, "Succeeded", name="a", timeout=wait)
    assert status.get("failedAttempts", 0) == 0 and ops.created(cluster, "jobs") == ["a-a1", "b-a1", "a-a1"]
