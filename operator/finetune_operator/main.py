"""The operator's entry point: kopf settings, login, memo, metrics and liveness servers, logging.

`run_operator()` is what `finetune operator` calls; `operator_task()` runs the same operator inside an
existing event loop (tests and local mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
import weakref
from collections.abc import Collection, Coroutine, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, cast

import kopf

from .api.common import GROUP, VERSION
from .config import Settings
from .handlers import build_registry
from .handlers.context import OperatorContext
from .metrics import metrics_route, serve
from .naming import ANNOTATION_PREFIX

logger = logging.getLogger(__name__)

CRD_PLURALS = ("finetunejobs", "trainingquotas")  # served in GROUP/VERSION
CRD_POLL_MIN_SECONDS = 0.5
CRD_POLL_MAX_SECONDS = 30.0
# a 404 that is not about the CRDs (they are served) could restart kopf in a loop: at most this many restarts
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 60.0
STOP_POLL_SECONDS = 0.2  # how often a threading.Event stop flag is looked at
CRD_CHECK_SECONDS = 10.0  # how often a running operator asks discovery whether its CRDs are still served

Flag = asyncio.Event | asyncio.Future[Any] | threading.Event

# Set (in the operator's own context) while kopf spawns its tasks: tasks created under it are the operator's.
_IN_OPERATOR: ContextVar[bool] = ContextVar("finetune_operator_in_operator", default=False)


class _ForeignTasks(Collection["asyncio.Task[Any]"]):
    """Every task of the loop that the operator did not create.

    kopf's `run_tasks` cancels, on stop, every task of the loop that appeared after the start except those in
    `ignored`: run inside a shared loop (tests, local mode), that cancels the caller's own tasks too (for
    example whatever awaits the stop, or an HTTP server started meanwhile). Passed as `ignored`, this keeps
    kopf's hands off them."""

    def __init__(self, ours: weakref.WeakSet[asyncio.Task[Any]]) -> None:
        self._ours = ours

    def _foreign(self) -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t not in self._ours}

    def __contains__(self, task: object) -> bool:
        return task not in self._ours

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(self._foreign())

    def __len__(self) -> int:
        return len(self._foreign())


async def _run_kopf(**kwargs: Any) -> None:
    """`kopf.operator(**kwargs)`, but on stop kopf cancels only the tasks the operator created."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    ours: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
    ) -> asyncio.Future[Any]:
        task = previous(loop, coro, **kw) if previous is not None else asyncio.Task(coro, loop=loop, **kw)
        if _IN_OPERATOR.get() and isinstance(task, asyncio.Task):
            ours.add(task)
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]  # typeshed's alias omits the context= keyword
    token = _IN_OPERATOR.set(True)
    try:
        tasks = await kopf.spawn_tasks(**kwargs)
        await kopf.run_tasks(tasks, ignored=_ForeignTasks(ours))
    finally:
        _IN_OPERATOR.reset(token)
        if loop.get_task_factory() is factory:
            loop.set_task_factory(previous)


# the metadata that kopf's essence keeps (labels, annotations) or its storage keys look at
_ESSENCE_METADATA = ("name", "namespace", "labels", "annotations", "ownerReferences")


class _LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diffbase storage, its essence built without deep copies: kopf builds one for
    every watch event of every watched resource (pods and Jobs included, whose specs are large) by
    deep-copying the whole body, status included. The essence is the same; its metadata part is kopf's
    own build (a copy: kopf edits it), the rest is shared with the body (kopf only compares it and writes
    it as JSON)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if extra_fields or self.ignored_fields:  # kopf's own way where it edits more than metadata
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        lean = {"kind": body.get("kind"), "metadata": {k: meta[k] for k in _ESSENCE_METADATA if k in meta}}
        built = super().build(body=kopf.Body(cast(kopf.RawBody, lean)))
        essence: dict[str, Any] = {
            k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")
        }
        if "metadata" in built:
            essence["metadata"] = built["metadata"]
        return cast(kopf.BodyEssence, essence)


class _LeanProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage; `clear` works on the essence it is given (kopf calls it only
    with essences that it has just built or parsed, and uses only the result) instead of a deep copy."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        annotations = essence.get("metadata", {}).get("annotations", {})
        keys = {key for key in annotations if self.prefix and key.startswith(f"{self.prefix}/")}
        self.remove_annotations(essence, keys)
        self.remove_empty_stanzas(essence)
        return essence


def configure_kopf(settings: Settings, kopf_settings: kopf.OperatorSettings) -> None:
    """kopf's own settings: our annotation prefix, no status writes, sensible event posting."""
    kopf_settings.persistence.progress_storage = _LeanProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = _LeanDiffBaseStorage(
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


def _missing_resource(exc: BaseException) -> bool:
    """Whether kopf stopped because a watched resource went away: a 404 on a list or watch (the CRDs were
    deleted; kopf reports `Watcher for finetunejobs.v1alpha1.finetune.dev@... has failed: 404`)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if getattr(err, "status", None) == 404 or getattr(err, "code", None) == 404:
            return True
        if isinstance(err, BaseExceptionGroup):
            todo.extend(err.exceptions)
        todo.extend(e for e in (err.__cause__, err.__context__) if e is not None)
    return False


def _flag_set(flag: Flag | None) -> bool:
    if flag is None:
        return False
    return flag.done() if isinstance(flag, asyncio.Future) else flag.is_set()


async def missing_crds(ctx: OperatorContext) -> list[str]:
    """The operator's CRDs (`plural.group`) that API discovery does not list now."""
    served = await ctx.kube.served_resources(f"{GROUP}/{VERSION}") or set()
    return [f"{plural}.{GROUP}" for plural in CRD_PLURALS if plural not in served]


async def wait_for_crds(ctx: OperatorContext, stop_flag: Flag | None = None) -> bool:
    """Poll API discovery (backoff up to CRD_POLL_MAX_SECONDS) until every CRD of the operator is served;
    False if `stop_flag` was set, or SIGTERM / SIGINT came, meanwhile (kopf, not running now, leaves its
    signal handlers behind: they would swallow the signal)."""
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, signalled.set)
                handled.append(signum)
    try:
        delay = CRD_POLL_MIN_SECONDS
        reported: list[str] | None = None
        while not (_flag_set(stop_flag) or signalled.is_set()):
            try:
                missing = await missing_crds(ctx)
            except Exception as exc:  # the API server itself may be away too: keep waiting
                missing = [f"(API discovery failed: {type(exc).__name__}: {exc})"[:300]]
            if not missing:
                return True
            if missing != reported:
                logger.warning(
                    "waiting for the CRDs %s: the operator resumes when they are installed again",
                    ", ".join(missing),
                )
                reported = missing
            deadline = loop.time() + delay
            while loop.time() < deadline and not (_flag_set(stop_flag) or signalled.is_set()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signalled.wait(), min(STOP_POLL_SECONDS, deadline - loop.time()))
            delay = min(CRD_POLL_MAX_SECONDS, delay * 2)
        return False
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _relay_stop(stop_flag: Flag | None, crds_gone: asyncio.Event, run_stop: asyncio.Event) -> None:
    """Set `run_stop` once the caller's stop flag (any kind) or `crds_gone` is set."""
    while not (_flag_set(stop_flag) or crds_gone.is_set()):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(crds_gone.wait(), STOP_POLL_SECONDS)
    run_stop.set()


async def _check_crds(ctx: OperatorContext, crds_gone: asyncio.Event) -> None:
    """Every CRD_CHECK_SECONDS, one discovery request: CRDs that are missing (never installed, or deleted
    before the CRD watch started, which then has nothing to report) stop this kopf run too."""
    while not crds_gone.is_set():
        await asyncio.sleep(CRD_CHECK_SECONDS)
        with contextlib.suppress(Exception):  # an unreachable API server is kopf's to report
            if await missing_crds(ctx):
                crds_gone.set()


def _watch_own_crds(registry: kopf.OperatorRegistry, crds_gone: asyncio.Event) -> None:
    """A watch of the operator's own CRDs: one being deleted (deletionTimestamp, or gone) stops this kopf run
    before its watches of the custom resources fail (the real server answers them 404 once it is gone)."""
    names = {f"{plural}.{GROUP}" for plural in CRD_PLURALS}

    @kopf.on.event(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        when=lambda name, **_: name in names,
        registry=registry,
    )
    def own_crd(event: kopf.RawEvent, **_: Any) -> None:
        meta = event["object"].get("metadata") or {}
        if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
            crds_gone.set()


async def operator_task(
    settings: Settings,
    *,
    ready_flag: Flag | None = None,
    stop_flag: Flag | None = None,
    ctx: OperatorContext | None = None,
) -> None:
    """Run the operator until `stop_flag` is set (or the task is cancelled).

    If its CRDs go away (uninstalled, replaced), kopf is stopped (by the watch of the CRDs, or because its
    watches failed with 404): the operator says that it waits for the CRDs, polls API discovery, and starts
    kopf again (the same context, its caches cleared) once they are back. The metrics and health servers
    keep running meanwhile."""
    ctx = ctx or OperatorContext(settings=settings)
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
        first, restarts = True, list[float]()
        while True:
            crds_gone = asyncio.Event()  # set by the CRD watch when one of our CRDs is being deleted
            run_stop = asyncio.Event()  # stops this kopf run: the caller's stop_flag, or crds_gone
            relay = asyncio.create_task(_relay_stop(stop_flag, crds_gone, run_stop))
            checker = asyncio.create_task(_check_crds(ctx, crds_gone))
            registry = build_registry(settings)
            _watch_own_crds(registry, crds_gone)
            kopf_settings = kopf.OperatorSettings()
            configure_kopf(settings, kopf_settings)
            try:
                await _run_kopf(
                    registry=registry,
                    settings=kopf_settings,
                    memo=kopf.Memo(ctx=ctx),
                    standalone=not settings.peering,
                    peering_name=settings.peering_name if settings.peering else None,
                    clusterwide=not namespaces,
                    namespaces=namespaces,
                    ready_flag=ready_flag if first else None,
                    stop_flag=run_stop,
                )
                if not crds_gone.is_set() or _flag_set(stop_flag):
                    return
                logger.warning("a CRD of the operator is being deleted: kopf stopped")
            except Exception as exc:
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_SECONDS]
                if not _missing_resource(exc) or _flag_set(stop_flag) or len(restarts) >= MAX_RESTARTS:
                    raise
                restarts.append(now)
                logger.warning("kopf stopped: a watched resource is gone (%s)", f"{exc}"[:300])
            finally:
                for helper in (relay, checker):
                    helper.cancel()
                    with contextlib.suppress(BaseException):
                        await helper
            first = False
            await asyncio.sleep(CRD_POLL_MIN_SECONDS)
            if not await wait_for_crds(ctx, stop_flag):
                return
            ctx.reset_watch_state()
            logger.info("the CRDs are installed again: the operator resumes")
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
