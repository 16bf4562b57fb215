"""Shared fixtures: the emulated API server with the project's CRDs, the real operator in-process, a kubelet."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def fast_settings(url: str, **overrides: Any) -> Any:
    """Operator settings for tests: tiny resync, backoff and grace period, no HTTP ports."""
    from finetune_operator.config import Settings

    values: dict[str, Any] = {
        "api_server": url,
        "api_insecure": True,
        "trainer_api_server": url,
        "resync_period_seconds": 1.0,
        "retry_backoff_seconds": 0.2,
        "retry_backoff_max_seconds": 1.0,
        "hosted_poll_seconds": 0.5,
        "metrics_port": 0,
        "health_port": 0,
        "namespaces": ["default"],
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """An emulated kube-apiserver (GC and Job controller on) with the FinetuneJob/TrainingQuota CRDs."""
    from finetune_operator.api.crdgen import all_crds
    from finetune_operator.local.emulator import Emulator

    async with Emulator(crds=list(all_crds().values()), seed=1) as emu:
        yield emu


class RunningOperator:
    """The real kopf operator, in a thread with its own event loop (as in a pod: kopf treats every task of
    its loop as its own, so it must not share the test's loop); `restart()` starts a fresh one."""

    def __init__(self, settings: Any) -> None:
        from finetune_operator.handlers.context import OperatorContext

        self.settings = settings
        self.ctx: OperatorContext | None = None
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self.contexts: list[OperatorContext] = []
        self.errors: list[BaseException] = []

    async def start(self) -> None:
        from finetune_operator.handlers.context import OperatorContext
        from finetune_operator.main import operator_task

        ctx = OperatorContext(settings=self.settings)
        self.ctx = ctx
        self.contexts.append(ctx)
        stop, ready = threading.Event(), threading.Event()
        self._stop = stop

        def run() -> None:
            try:
                asyncio.run(operator_task(self.settings, ready_flag=ready, stop_flag=stop, ctx=ctx))
            except BaseException as exc:
                self.errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="operator", daemon=True)
        self._thread.start()
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"
        assert not self.errors, self.errors

    async def stop(self) -> None:
        if self._thread is None or self._stop is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 15)
        assert not self._thread.is_alive(), "the operator did not stop"
        self._thread = None
        assert not self.errors, self.errors

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def calls(self) -> set[Any]:
        return set().union(*(c.kube.calls for c in self.contexts))


@pytest.fixture
async def operator_factory(cluster: Any) -> AsyncIterator[Callable[..., Awaitable[RunningOperator]]]:
    """Start the operator against `cluster` with fast settings (overrides as keyword arguments)."""
    running: list[RunningOperator] = []

    async def start(**overrides: Any) -> RunningOperator:
        op = RunningOperator(fast_settings(cluster.url, **overrides))
        await op.start()
        running.append(op)
        return op

    yield start
    for op in running:
        await op.stop()


@pytest.fixture
def kubelet(cluster: Any) -> Any:
    from finetune_operator.local.kubelet import FakeKubelet

    return FakeKubelet(cluster)


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)
