"""The real kopf operator against the emulated API server, with FinetuneJobs of engine openai / gradient
pointing at the local fake providers (the backends go through the real `openai` / `gradientai` SDKs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import eventually, fast_settings
from tests.fakes.fake_gradient import FakeGradient
from tests.fakes.fake_openai import REFUSAL_MESSAGE, FakeOpenAI
from tests.unit.hosted_support import GOOD_CHAT

from finetune_operator.api.finetunejob import EngineKind
from finetune_operator.backends import gradient_backend, openai_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
NS = "default"


class HostedOperator:
    """The operator with the hosted backends registered (a restart builds a fresh context and backends)."""

    def __init__(self, cluster: Any) -> None:
        self.settings = fast_settings(cluster.url)
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def start(self) -> None:
        from finetune_operator.handlers.context import OperatorContext
        from finetune_operator.main import operator_task

        ctx = OperatorContext(settings=self.settings)
        ctx.backends.register(EngineKind.OPENAI, openai_backend.make_backend)
        ctx.backends.register(EngineKind.GRADIENT, gradient_backend.make_backend)
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(
            operator_task(self.settings, ready_flag=ready, stop_flag=self._stop, ctx=ctx)
        )
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({self._task}, timeout=10)  # never raises, even if kopf ends cancelled
        if not done:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._task = None


@pytest.fixture
async def hosted_operator(cluster: Any) -> AsyncIterator[HostedOperator]:
    op = HostedOperator(cluster)  # started inside the test, like conftest's operator_factory
    yield op
    try:
        await op.stop()
    except asyncio.CancelledError:
        # Stopping kopf with hosted (finalizer-bearing) jobs cancels the awaiting task once; see the report.
        task = asyncio.current_task()
        if task is None or task.uncancel() > 0:
            raise


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
    cluster: Any, hosted_operator: HostedOperator
) -> None:
    await hosted_operator.start()
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


async def test_openai_refusal_fails_with_provider_message(
    cluster: Any, hosted_operator: HostedOperator
) -> None:
    await hosted_operator.start()
    async with FakeOpenAI(refuse_new_jobs=REFUSAL_MESSAGE) as fake:
        await _secret(cluster, "openai-key", "apiKey", fake.api_key)
        await _config_map(cluster, "chat-data", "train.jsonl", GOOD_CHAT)
        await cluster.create(_openai_job("refused", fake.base_url))
        status = await _phase(cluster, "refused", "Failed")
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert "ProviderRefused" in failed["message"] and "2027-01-06" in failed["message"]
        assert fake.created_jobs == 0


async def test_gradient_job_succeeds_with_adapter_id(cluster: Any, hosted_operator: HostedOperator) -> None:
    inputs = "\n".join(json.dumps({"inputs": f"### Q: {i}?\n### A: {i * 2}"}) for i in range(6))
    await hosted_operator.start()
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
