"""The operator's entry point: kopf settings, login, memo, metrics and liveness servers, logging.

`run_operator()` is what `finetune operator` calls; `operator_task()` runs the same operator inside an
existing event loop (tests and local mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
from typing import Any

import kopf

from .config import Settings
from .handlers import build_registry
from .handlers.context import OperatorContext
from .metrics import metrics_route, serve
from .naming import ANNOTATION_PREFIX

logger = logging.getLogger(__name__)

Flag = asyncio.Event | asyncio.Future[Any] | threading.Event


def configure_kopf(settings: Settings, kopf_settings: kopf.OperatorSettings) -> None:
    """kopf's own settings: our annotation prefix, no status writes, sensible event posting."""
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    kopf_settings.posting.level = logging.WARNING  # only warnings and errors become k8s Events
    kopf_settings.posting.enabled = True
    kopf_settings.peering.standalone = not settings.peering
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.mandatory = settings.peering
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.batching.worker_limit = 256
    kopf_settings.execution.max_workers = 8
    kopf_settings.networking.request_timeout = 60
    kopf_settings.scanning.disabled = False


async def operator_task(
    settings: Settings,
    *,
    ready_flag: Flag | None = None,
    stop_flag: Flag | None = None,
    ctx: OperatorContext | None = None,
) -> None:
    """Run the operator until `stop_flag` is set (or the task is cancelled)."""
    ctx = ctx or OperatorContext(settings=settings)
    registry = build_registry(settings)
    memo = kopf.Memo(ctx=ctx)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(settings, kopf_settings)
    namespaces = list(settings.namespaces)
    servers: list[asyncio.Task[None]] = []
    if settings.metrics_port:
        servers.append(
            asyncio.create_task(serve(settings.metrics_port, {"/metrics": metrics_route(ctx.metrics)}))
        )

    async def healthz() -> tuple[int, bytes, str]:
        return 200, json.dumps({"ok": True}).encode(), "application/json"

    if settings.health_port:
        servers.append(asyncio.create_task(serve(settings.health_port, {"/healthz": healthz})))
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            memo=memo,
            standalone=not settings.peering,
            peering_name=settings.peering_name if settings.peering else None,
            clusterwide=not namespaces,
            namespaces=namespaces,
            ready_flag=ready_flag,
            stop_flag=stop_flag,
        )
    finally:
        for task in servers:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await ctx.close()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(verbose: bool, log_format: str = "plain") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("aiohttp.access", "kopf.objects", "kopf.activities"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def run_operator(namespaces: list[str], verbose: bool) -> int:
    """`finetune operator`: run until interrupted. Returns the exit code."""
    base = Settings()
    settings = base.model_copy(update={"namespaces": namespaces}) if namespaces else base
    configure_logging(verbose, settings.log_format)
    logger.info("finetune-operator starting (namespaces: %s)", ", ".join(settings.namespaces) or "all")
    try:
        asyncio.run(operator_task(settings))
    except KeyboardInterrupt:
        return 0
    except Exception:
        logger.exception("the operator stopped with an error")
        return 1
    return 0
