"""Helpers shared by the hosted-backend unit tests: an in-memory object getter, a recording sleep, jobs."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from finetune_operator.api import parse_job
from finetune_operator.api.finetunejob import FinetuneJob
from finetune_operator.backends.hosted_common import HostedContext, RetryPolicy, context_from_getter

API_KEY = "test-key-not-real"


class Objects:
    """Secrets and ConfigMaps by (plural, namespace, name), served like KubeClient.get."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], dict[str, Any]] = {}

    def secret(self, name: str, key: str, value: str, namespace: str = "team-a") -> None:
        self.items[("secrets", namespace, name)] = {"data": {key: base64.b64encode(value.encode()).decode()}}

    def config_map(self, name: str, key: str, value: str, namespace: str = "team-a") -> None:
        self.items[("configmaps", namespace, name)] = {"data": {key: value}}

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.items[(plural, namespace, name)]
        except KeyError:
            raise LookupError(f"{plural} {namespace}/{name} not found") from None


@dataclass
class Sleeps:
    """A sleep that returns at once and records the delays asked for."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_context(objects: Objects, sleeps: Sleeps, **kwargs: Any) -> HostedContext:
    policy = kwargs.pop(
        "retry", RetryPolicy(attempts=4, base_delay=0.5, max_delay=5, max_total_delay=30, call_timeout=10)
    )
    return context_from_getter(objects.get, retry=policy, sleep=sleeps, **kwargs)


def chat_line(question: str, answer: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
    )


GOOD_CHAT = "\n".join(chat_line(f"What is {i} + {i}?", str(2 * i)) for i in range(12)) + "\n"


def openai_job(
    base_url: str,
    *,
    uid: str = "uid-1",
    status: dict[str, Any] | None = None,
    start_job_id: str | None = None,
    dataset: bool = True,
    **engine: Any,
) -> FinetuneJob:
    eng: dict[str, Any] = {
        "baseModel": "gpt-4o-mini-2024-07-18",
        "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
        "suffix": "faq",
        "seed": 7,
        "hyperparameters": {"epochs": 2},
        "endpoint": {"baseUrl": base_url},
        **engine,
    }
    if start_job_id:
        eng["startJobId"] = start_job_id
    body: dict[str, Any] = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "faq-bot", "namespace": "team-a", "uid": uid},
        "spec": {"engine": {"openai": eng}},
    }
    if dataset:
        body["spec"]["dataset"] = {"train": {"configMap": {"name": "chat-data", "key": "train.jsonl"}}}
    if status is not None:
        body["status"] = status
    return parse_job(body)


def gradient_job(
    host: str, *, uid: str = "uid-g", status: dict[str, Any] | None = None, **engine: Any
) -> FinetuneJob:
    eng: dict[str, Any] = {
        "accessTokenSecretRef": {"name": "gradient", "key": "token"},
        "host": host,
        "workspaceId": "ws-test",
        "batchSize": 2,
        "epochs": 1,
        **engine,
    }
    if "modelAdapterId" not in eng and "baseModelSlug" not in eng:
        eng["baseModelSlug"] = "nous-hermes2"
    body: dict[str, Any] = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "notes-bot", "namespace": "team-a", "uid": uid},
        "spec": {
            "engine": {"gradient": eng},
            "dataset": {"train": {"configMap": {"name": "inputs-data", "key": "train.jsonl"}}},
        },
    }
    if status is not None:
        body["status"] = status
    return parse_job(body)
