"""The real kopf operator against the emulated API server, with FinetuneJobs of engine openai / gradient
pointing at the local fake providers (the backends go through the real `openai` / `gradientai` SDKs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.conftest import RunningOperator, eventually
from tests.fakes.fake_gradient import FakeGradient
from tests.fakes.fake_openai import REFUSAL_MESSAGE, FakeOpenAI
from tests.unit.hosted_support import GOOD_CHAT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
NS = "default"


@pytest.fixture
async def hosted_operator(operator_factory: Callable[..., Awaitable[RunningOperator]]) -> RunningOperator:
    """The real operator (conftest's thread-based fixture): the hosted backends come from the operator's own
    BackendRegistry (resolved lazily by engine kind), exactly as in a deployed operator."""
    return await operator_factory()


def _status(cluster: Any, name: str) -> dict[str, Any]:
    obj = cluster.store.get("finetunejobs", NS, name) or {}
    return dict(obj.get("status") or {})


async def _phase(cluster: Any, name: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
    await eventually(lambda: _status(cluster, name).get("phase") == phase, timeout=timeout)
    return _status(cluster, name)


async def _secret(cluster: Any, name: str, key: str, value: str) -> None:
    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "stringData": {key: value},
        }
    )


async def _config_map(cluster: Any, name: str, key: str, value: str) -> None:
    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS},
            "data": {key: value},
        }
    )


def _openai_job(name: str, base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "engine": {
                "openai": {
                    "baseModel": "gpt-4o-mini-2024-07-18",
                    "suffix": "faq",
                    "apiKeySecretRef": {"name": "openai-key", "key": "apiKey"},
                    "endpoint": {"baseUrl": base_url},
                }
            },
            "dataset": {"train": {"configMap": {"name": "chat-data", "key": "train.jsonl"}}},
        },
    }


async def test_openai_job_succeeds_with_provider_model_id(
    cluster: Any, hosted_operator: RunningOperator
) -> None:
    async with FakeOpenAI() as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("faq", fake.base_url))
        status = await _phase(cluster, "faq", "Succeeded")
        job_id = status["remoteJobId"]
        assert status["model"]["providerModelId"] == f"ft:gpt-4o-mini-2024-07-18:faq:{job_id}"
        assert fake.created_jobs == 1
        assert status["metrics"]["trainedTokens"] > 0
        assert status["checkpoints"]["latest"]["modelId"].endswith("ckpt-step-30")
        assert fake.api_key not in json.dumps(cluster.store.get("finetunejobs", NS, "faq"))
        remote = [
            e["message"]
            for e in cluster.store.list("events", NS)
            if e["involvedObject"]["name"] == "faq" and e["reason"] == "RemoteEvent"
        ]
        assert remote and len(remote) == len(set(remote))  # the provider's events, each once
        polls = len(fake.requests)
        await asyncio.sleep(2.5)  # several resyncs (1 s) and hosted polls (0.5 s)
        assert len(fake.requests) == polls, "a finished job is never polled again"


async def test_openai_transient_errors_requeue_without_failing(
    cluster: Any, hosted_operator: RunningOperator
) -> None:
    async with FakeOpenAI() as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        # more 503s than one reconcile's retry budget (3 tries): the reconcile gives up and requeues
        fake.fail_next("GET /v1/fine_tuning/jobs/{id}", 503, times=5, retry_after=0.2)
        await cluster.create(_openai_job("busy", fake.base_url))
        status = await _phase(cluster, "busy", "Succeeded")
        assert fake.created_jobs == 1 and not status.get("failedAttempts")
        assert len(fake.calls("GET /v1/fine_tuning/jobs/{id}")) > 5
        assert not [c for c in status["conditions"] if c["type"] == "Failed" and c["status"] == "True"]
        assert hosted_operator.ctx is not None
        sample = hosted_operator.ctx.metrics.registry.get_sample_value
        assert (sample("finetune_provider_requeues_total") or 0) >= 1
        assert (sample("finetune_reconcile_errors_total") or 0) == 0  # not the generic error path


async def test_deleting_a_running_openai_job_cancels_the_remote_job(
    cluster: Any, hosted_operator: RunningOperator
) -> None:
    async with FakeOpenAI(polls_per_state=1000) as fake:  # stays running until cancelled
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("stop-me", fake.base_url))
        await eventually(lambda: _status(cluster, "stop-me").get("remoteJobId"), timeout=30)
        job_id = _status(cluster, "stop-me")["remoteJobId"]
        await cluster.delete("finetunejobs", NS, "stop-me")
        await eventually(lambda: cluster.store.get("finetunejobs", NS, "stop-me") is None, timeout=30)
        assert fake.cancelled == [job_id]
        assert fake.created_jobs == 1


async def test_deletion_never_blocks_forever_on_an_unreachable_provider(
    cluster: Any, operator_factory: Callable[..., Awaitable[RunningOperator]]
) -> None:
    await operator_factory(hosted_cancel_timeout_seconds=0.5, hosted_poll_seconds=0.2)
    async with FakeOpenAI(polls_per_state=1000) as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("orphan", fake.base_url))
        await eventually(lambda: _status(cluster, "orphan").get("remoteJobId"), timeout=30)
        fake.fail_next("POST /v1/fine_tuning/jobs/{id}/cancel", 503, times=100)
        fake.fail_next("GET /v1/fine_tuning/jobs/{id}", 503, times=100)
        fake.fail_next("GET /v1/fine_tuning/jobs", 503, times=100)
        await cluster.delete("finetunejobs", NS, "orphan")
        # bounded: 3 tries of (0.5 s timeout + 0.2 s delay), plus kopf's own pacing
        await eventually(lambda: cluster.store.get("finetunejobs", NS, "orphan") is None, timeout=30)
        reasons = [
            e["reason"] for e in cluster.store.list("events", NS) if e["involvedObject"]["name"] == "orphan"
        ]
        assert "RemoteCancelFailed" in reasons
        assert fake.cancelled == []


async def test_openai_refusal_fails_with_provider_message(
    cluster: Any, hosted_operator: RunningOperator
) -> None:
    async with FakeOpenAI(refuse_new_jobs=REFUSAL_MESSAGE) as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("refused", fake.base_url))
        status = await _phase(cluster, "refused", "Failed")
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert "ProviderRefused" in failed["message"] and "2027-01-06" in failed["message"]
        assert failed["reason"] == "ProviderRefused"

        def kinds() -> set[tuple[str, str]]:  # Events are posted after the status patch, in the background
            events = cluster.store.list("events", NS)
            return {(e["type"], e["reason"]) for e in events if e["involvedObject"]["name"] == "refused"}

        await eventually(lambda: ("Warning", "ProviderRefused") in kinds())
        assert fake.created_jobs == 0


async def test_gradient_job_succeeds_with_adapter_id(cluster: Any, hosted_operator: RunningOperator) -> None:
    inputs = "\n".join(json.dumps({"inputs": f"### Q: {i}?\n### A: {i * 2}"}) for i in range(6))
    async with FakeGradient() as fake:
        await _secret(cluster, "gradient-token", "token", fake.token)
        await _config_map(cluster, "inputs-data", "train.jsonl", inputs)
        await cluster.create(
            {
                "apiVersion": "finetune.dev/v1alpha1",
                "kind": "FinetuneJob",
                "metadata": {"name": "notes", "namespace": NS},
                "spec": {
                    "engine": {
                        "gradient": {
                            "baseModelSlug": "nous-hermes2",
                            "name": "notes-adapter",
                            "rank": 8,
                            "batchSize": 2,
                            "epochs": 2,
                            "host": fake.host,
                            "workspaceId": fake.workspace_id,
                            "accessTokenSecretRef": {"name": "gradient-token", "key": "token"},
                        }
                    },
                    "dataset": {"train": {"configMap": {"name": "inputs-data", "key": "train.jsonl"}}},
                },
            }
        )
        status = await _phase(cluster, "notes", "Succeeded")
        adapter = fake.adapters()[0]
        assert status["model"]["adapterId"] == adapter["id"] and status["remoteJobId"] == adapter["id"]
        assert len(fake.fine_tune_calls) == 6 and len(fake.adapters()) == 1


async def test_operator_in_a_shared_loop_stops_without_cancelling_other_tasks(cluster: Any) -> None:
    """operator_task in the caller's loop (as local mode may run it): stopping it with a finalizer-bearing
    hosted job must cancel none of the caller's tasks created after the start (kopf's stop cancels every
    task of the loop it takes for its own)."""
    import asyncio

    from tests.conftest import fast_settings

    from finetune_operator.main import operator_task

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(operator_task(fast_settings(cluster.url), ready_flag=ready, stop_flag=stop))
    await asyncio.wait_for(ready.wait(), 10)
    async with FakeOpenAI() as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("shared", fake.base_url))
        await _phase(cluster, "shared", "Succeeded")
        assert cluster.store.get("finetunejobs", NS, "shared")["metadata"].get("finalizers")
        bystander = asyncio.create_task(asyncio.sleep(30))

        async def stopper() -> bool:
            stop.set()
            done, _ = await asyncio.wait({task}, timeout=15)
            return task in done

        assert await asyncio.create_task(stopper())
        assert not bystander.cancelled() and not bystander.done()
        bystander.cancel()
