"""QuotaController against the emulated API server: a hosted token budget rolls with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import fast_settings

from finetune_operator.kube import Connection, KubeClient
from finetune_operator.quota import ADMITTED_AT
from finetune_operator.quota_controller import QuotaController

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def hosted_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "engine": {"openai": {"apiKeySecretRef": {"name": "openai", "key": "key"}}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.jsonl"}}},
        },
    }


async def test_token_budget_blocks_until_window_rolls(cluster: Any) -> None:
    now = [T0]
    kube = KubeClient(Connection(server=cluster.url, insecure=True))
    controller = QuotaController(kube, fast_settings(cluster.url), clock=lambda: now[0])
    try:
        await cluster.create(
            {
                "apiVersion": "finetune.dev/v1alpha1",
                "kind": "TrainingQuota",
                "metadata": {"name": "tokens"},
                "spec": {"limits": {"hostedTokens": [{"provider": "any", "tokens": 1000, "window": "24h"}]}},
            }
        )
        spent = await cluster.create(hosted_job("spent"))
        first = await controller.decide(spent["metadata"]["uid"])
        assert first is not None and first.admitted
        # the job finished an hour later, having trained 1500 tokens
        await cluster.patch(
            "finetunejobs",
            "default",
            "spent",
            {
                "status": {
                    "phase": "Succeeded",
                    "completionTime": "2025-03-01T01:00:00Z",
                    "metrics": {"trainedTokens": 1500},
                }
            },
            subresource="status",
        )
        controller.observe(cluster.store.get("finetunejobs", "default", "spent"))  # the watch delivers it
        waiting = await cluster.create(hosted_job("next"))
        controller.observe(waiting)
        uid = waiting["metadata"]["uid"]
        now[0] = T0 + timedelta(hours=2)
        decision = await controller.decide(uid)
        assert decision is not None and decision.queued
        assert decision.message == (
            "TrainingQuota tokens: hosted tokens tokens any/24h 1500/1000 used; "
            "room again at 2025-03-02T01:00:00Z"
        )
        hook = await controller.admit(await _parsed(cluster, "next"))
        assert (hook.admitted, hook.reason, hook.queue_position) == (False, "QuotaExceeded", 1)
        tq = cluster.store.get("trainingquotas", None, "tokens")
        assert tq["status"]["usageSummary"] == "tokens any/24h 1500/1000"
        assert tq["status"]["queuedJobs"] == 1
        now[0] = T0 + timedelta(hours=25)  # the usage rolled out of the window
        await controller.on_capacity_change()
        obj = cluster.store.get("finetunejobs", "default", "next")
        assert ADMITTED_AT in obj["metadata"]["annotations"]
        assert obj["metadata"]["annotations"]["finetune.dev/admitted-by"] == "tokens"
        decision = await controller.decide(uid)
        assert decision is not None and decision.admitted
        text = next(iter(controller.metrics.wait.collect())).samples
        assert any(s.name.endswith("_count") and s.value == 2 for s in text)
    finally:
        await controller.close()
        await kube.close()


async def _parsed(cluster: Any, name: str) -> Any:
    from finetune_operator.api import parse_job

    return parse_job(cluster.store.get("finetunejobs", "default", name))
