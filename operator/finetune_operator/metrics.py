"""Prometheus metrics of the operator, in a registry of its own (no module-level state), and the HTTP
servers for /metrics and the liveness probe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp.web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")


class Metrics:
    """The operator's metrics. One instance per operator run."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Gauge("finetune_jobs", "FinetuneJobs by phase.", ["phase"], registry=self.registry)
        self.attempts = Counter(
            "finetune_attempts", "Trainer attempts started, by engine.", ["engine"], registry=self.registry
        )
        self.failed_attempts = Counter(
            "finetune_failed_attempts", "Attempts that failed (not disruptions).", registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "finetune_reconcile_duration_seconds",
            "Duration of one reconcile of a FinetuneJob.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "finetune_reconcile_errors", "Reconciles that raised an error.", registry=self.registry
        )
        self.provider_requeues = Counter(
            "finetune_provider_requeues",
            "Reconciles put off because a hosted provider was busy or unreachable (retried after its delay).",
            registry=self.registry,
        )
        self.start_latency = Histogram(
            "finetune_creation_to_trainer_start_seconds",
            "Time from a FinetuneJob's creation to its trainer running (first attempt).",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self._phases: dict[str, str] = {}
        for phase in PHASES:
            self.jobs.labels(phase=phase).set(0)

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Track the phase of one job (None: the job is gone)."""
        old = self._phases.pop(uid, None)
        if phase is not None:
            self._phases[uid] = phase
        if old == phase:
            return
        if old is not None:
            self.jobs.labels(phase=old).dec()
        if phase is not None:
            self.jobs.labels(phase=phase).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve(
    port: int, routes: dict[str, Callable[[], Awaitable[tuple[int, bytes, str]]]], host: str = "0.0.0.0"
) -> None:
    """Serve GET routes on a port until cancelled (port 0 disables: returns at once)."""
    if port == 0:
        return
    app = aiohttp.web.Application()

    def _make(
        fn: Callable[[], Awaitable[tuple[int, bytes, str]]],
    ) -> Callable[..., Awaitable[aiohttp.web.Response]]:
        async def handler(_: aiohttp.web.Request) -> aiohttp.web.Response:
            code, body, ctype = await fn()
            return aiohttp.web.Response(status=code, body=body, headers={"Content-Type": ctype})

        return handler

    for path, fn in routes.items():
        app.router.add_get(path, _make(fn))
    runner = aiohttp.web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def metrics_route(metrics: Metrics) -> Callable[[], Awaitable[tuple[int, bytes, str]]]:
    async def route() -> tuple[int, bytes, str]:
        return 200, metrics.render(), CONTENT_TYPE_LATEST

    return route
