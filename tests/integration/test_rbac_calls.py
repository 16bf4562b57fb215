"""Every API call the real operator makes in the lifecycle scenarios is granted by the RBAC rules the Helm
chart renders (`finetune_operator.rbac_requirements`): in-cluster success with a TTL, a hosted OpenAI job
against the fake provider, and a TrainingQuota that queues one job behind another."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import eventually
from tests.fakes.fake_openai import FakeOpenAI
from tests.integration.operator_support import NS, data_config_map, result_json, st_job, wait_phase, wait_pod
from tests.integration.test_hosted_operator import _config_map, _openai_job, _secret
from tests.unit.hosted_support import GOOD_CHAT

from finetune_operator import rbac_requirements

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_lifecycle_calls_are_covered_by_rbac(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    op = await operator_factory()
    await data_config_map(cluster)
    # a quota of one job: "second" queues behind "first"
    await cluster.create(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "TrainingQuota",
            "metadata": {"name": "one-at-a-time"},
            "spec": {"limits": {"maxJobs": 1}},
        }
    )
    await cluster.create(st_job("first", ttlSecondsAfterFinished=1))
    pod = await wait_pod(cluster, 1, name="first")
    await cluster.create(st_job("second"))
    await wait_phase(cluster, "Queued", name="second")
    await kubelet.run(pod)
    await kubelet.succeed(pod, message=result_json("first"))
    await wait_phase(cluster, "Succeeded", name="first")
    pod2 = await wait_pod(cluster, 1, name="second")
    await kubelet.run(pod2)
    await kubelet.succeed(pod2, message=result_json("second"))
    await wait_phase(cluster, "Succeeded", name="second")
    await eventually(lambda: cluster.store.get("finetunejobs", NS, "first") is None)  # TTL deleted it
    async with FakeOpenAI() as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("hosted", fake.base_url))
        await wait_phase(cluster, "Succeeded", name="hosted", timeout=30)
        await cluster.delete("finetunejobs", NS, "hosted")
        await eventually(lambda: cluster.store.get("finetunejobs", NS, "hosted") is None)

    made = {rbac_requirements.permission_of(c) for c in op.calls}
    # the scenarios really exercised the interesting calls (the check below is not vacuous)
    for group, resource, verb in [
        ("batch", "jobs", "create"),
        ("finetune.dev", "finetunejobs/status", "patch"),
        ("finetune.dev", "finetunejobs", "delete"),
        ("finetune.dev", "trainingquotas/status", "patch"),
        ("", "secrets", "get"),
        ("", "events", "create"),
    ]:
        assert rbac_requirements.Permission(group, resource, verb) in made, (group, resource, verb)
    assert rbac_requirements.uncovered(op.calls, peering=False, kueue=False, clusterwide=True) == []
