"""Kueue mode: a FinetuneJob with spec.runPolicy.queueName gets a trainer Job that carries Kueue's queue
label and is created suspended; the FinetuneJob shows Queued (QueuedInKueue) until Kueue admits the Job by
unsuspending it, then runs as usual. Kueue itself is played by the test (it only flips spec.suspend)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration import operator_support as ops

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_kueue_admits_by_unsuspending_the_trainer_job(
    cluster: Any, operator_factory: Any, kubelet: Any
) -> None:
    await operator_factory(kueue_mode=True)
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job("kq", queueName="team-a"))
    job = await eventually(lambda: cluster.store.get("jobs", ops.NS, "kq-a1"))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    status = await ops.wait_phase(cluster, "Queued", name="kq")
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "False" and admitted["reason"] == "QueuedInKueue"
    assert ops.created(cluster, "pods") == []  # a suspended Job starts no pod

    await cluster.patch("jobs", ops.NS, "kq-a1", {"spec": {"suspend": False}})  # Kueue admits the workload
    pod = await ops.wait_pod(cluster, 1, name="kq")
    await kubelet.run(pod)
    status = await ops.wait_phase(cluster, "Running", name="kq")
    assert next(c for c in status["conditions"] if c["type"] == "Admitted")["status"] == "True"
    await kubelet.succeed(pod, message=ops.result_json("kq"))
    await ops.wait_phase(cluster, "Succeeded", name="kq")
    assert ops.created(cluster, "jobs") == ["kq-a1"]


async def test_without_kueue_mode_the_queue_name_is_only_a_label_for_quotas(
    cluster: Any, operator_factory: Any
) -> None:
    await operator_factory()
    await ops.data_config_map(cluster)
    await cluster.create(ops.st_job("plain", queueName="team-a"))
    job = await eventually(lambda: cluster.store.get("jobs", ops.NS, "plain-a1"))
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"].get("labels", {})
    assert not job["spec"].get("suspend")
    assert ops.status_of(cluster, "plain").get("phase") in (None, "Pending", "Running")
