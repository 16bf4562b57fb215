"""The one reconcile path of a FinetuneJob: parse, admit, observe, act, derive status, patch once, Events.

Level-based: everything is recomputed from what is observed (the job, its attempts' Jobs and Pods, the
clock); the only memory is the status itself. Never raises for bad input: an invalid spec becomes
`Failed/InvalidSpec` with the field paths and a Warning Event, and no child is ever created for it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..api import EngineKind, FinetuneJob, SpecError, parse_job
from ..api.common import API_VERSION
from ..api.finetunejob import IN_CLUSTER_ENGINES
from ..backends.base import Backend, Observation
from ..backends.hosted_common import TransientProviderError
from ..kube import ApiError, JsonDict
from ..naming import LABEL_ATTEMPT
from ..status import (
    AttemptObservation,
    Observed,
    derive_status,
    disruption_event,
    events_for_transition,
    next_action,
    status_patch,
)
from ..status.derive import parse_time
from ..status.observed import R_AWAITING_ADMISSION, R_SUSPENDED
from .context import OperatorContext

logger = logging.getLogger(__name__)

ERROR_RETRY_SECONDS = 2.0
MIN_REQUEUE_SECONDS = 0.5
TERMINAL = ("Succeeded", "Failed")


def _admission_before(status: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """(admitted, queued, message): the Admitted condition is True; the job is Queued with Admitted
    False; the condition's message (kept while the admission stands, so that it causes no patch)."""
    cond: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Admitted"), {}
    )
    admitted = cond.get("status") == "True"
    queued = not admitted and bool(cond) and status.get("phase") == "Queued"
    return admitted, queued, str(cond.get("message") or "") if admitted else ""


def _known_attempts(ctx: OperatorContext, uid: str, status: Mapping[str, Any]) -> int:
    n = int(status.get("attempts") or 0)
    for (kind, _), child in ctx.cache.children.get(uid, {}).items():
        if kind == "Job":
            label = (child["metadata"].get("labels") or {}).get(LABEL_ATTEMPT, "0")
            n = max(n, int(label) if label.isdigit() else 0)
    return n


async def post_event(
    ctx: OperatorContext, body: Mapping[str, Any], etype: str, reason: str, message: str
) -> None:
    """A core/v1 Event about the FinetuneJob (best effort)."""
    meta = body.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ns = meta.get("namespace") or "default"
    event: JsonDict = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": ns},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "FinetuneJob",
            "name": meta.get("name"),
            "namespace": ns,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": etype,
        "source": {"component": "finetune-operator"},
        "reportingComponent": "finetune.dev/operator",
        "reportingInstance": "finetune-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await ctx.kube.create("events", ns, event)
    except Exception as exc:  # events are best effort
        logger.warning("cannot post event %s for %s/%s: %s", reason, ns, meta.get("name"), exc)


async def reconcile_uid(ctx: OperatorContext, uid: str) -> None:
    """Reconcile a job known to the cache (child events, wake-ups, resync)."""
    body = ctx.cache.jobs.get(uid)
    if body is not None:
        await reconcile(ctx, body)


async def reconcile(ctx: OperatorContext, body: Mapping[str, Any]) -> None:
    """Serialized per job; errors are logged and retried soon (never a crash loop, never a kopf retry)."""
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    ctx.cache.put_job(dict(body))
    started = time.perf_counter()
    async with ctx.lock(uid):
        fresh = ctx.cache.jobs.get(uid, dict(body))
        ctx.reconciling(uid, fresh)
        try:
            await _reconcile(ctx, fresh)
        except TransientProviderError as exc:  # the provider is busy or unreachable: look again later
            ctx.metrics.provider_requeues.inc()
            logger.info(
                "provider of %s/%s unavailable, retrying in %.1fs: %s",
                meta.get("namespace"),
                meta.get("name"),
                exc.delay,
                exc.message,
            )
            now = datetime.now(UTC)
            ctx.wake_at(uid, now + timedelta(seconds=max(exc.delay, MIN_REQUEUE_SECONDS)), now)
        except Exception as exc:
            ctx.metrics.reconcile_errors.inc()
            level = logging.WARNING if isinstance(exc, ApiError | OSError | TimeoutError) else logging.ERROR
            logger.log(
                level,
                "reconcile of %s/%s failed: %s",
                meta.get("namespace"),
                meta.get("name"),
                exc,
                exc_info=level == logging.ERROR,
            )
            now = datetime.now(UTC)
            ctx.wake_at(uid, now + timedelta(seconds=ERROR_RETRY_SECONDS), now)
        finally:
            ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)


async def _reconcile(ctx: OperatorContext, body: JsonDict) -> None:
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return  # being deleted: never (re)create children
    uid, ns, name = str(meta.get("uid") or ""), meta.get("namespace") or "default", str(meta.get("name"))
    old_status: JsonDict = dict(body.get("status") or {})
    now = datetime.now(UTC)
    try:
        job = parse_job(body)
    except SpecError as err:
        new = derive_status(body, Observed(spec_error=err, now=now), now)
        await _write_status(ctx, body, old_status, new)
        return

    backend = ctx.backends.get(job.spec.engine.kind, ctx)
    terminal = old_status.get("phase") in TERMINAL
    # A finished job is never observed again (no polling of a provider forever): its status is sticky, and
    # what is left to do (TTL) needs no observation. Its attempts were cancelled before it was marked so.
    attempts = (
        []
        if terminal
        else [
            AttemptObservation(n, await backend.observe(job, n))
            for n in range(1, _known_attempts(ctx, uid, old_status) + 1)
        ]
    )
    remote_events = [ev for a in attempts for ev in a.observation.events]
    admitted_before, queued_before, admitted_message = _admission_before(old_status)
    # A job resuming from suspend asks the hook again (quota admission may have released its capacity), and
    # so does one whose resume was queued; a job with attempts but no recorded admission was admitted.
    resuming = old_status.get("phase") == "Suspended" and not job.spec.run_policy.suspend
    known = admitted_before or (bool(attempts) and not queued_before)
    admitted: bool | None = True if (known or terminal) and not resuming else None
    reason, message = "", admitted_message if admitted else ""
    queue_position: int | None = None
    admitted_by: tuple[str, ...] = ()
    ask_again = False
    if admitted is None and not terminal:
        observe = getattr(ctx.quota, "observe", None)
        if (
            observe is not None
        ):  # quota admission decides on the body this reconcile acts on, not an older one
            observe(body)
        decision = await ctx.admit(job, ctx)
        admitted, reason, message = decision.admitted, decision.reason, decision.message
        queue_position, admitted_by = decision.queue_position, tuple(decision.admitted_by)
        if resuming and not admitted and reason == R_SUSPENDED:
            # quota admission still counts the job as suspended (its status says so): leave Suspended
            # first, then ask again at once
            reason, message, ask_again = R_AWAITING_ADMISSION, "resumed; waiting for admission", True

    def observed() -> Observed:
        return Observed(
            admitted=admitted,
            admission_reason=reason,
            admission_message=message,
            queue_position=queue_position,
            admitted_by=admitted_by,
            attempts=tuple(attempts),
            suspended=job.spec.run_policy.suspend,
            now=now,
        )

    action = next_action(job, observed(), ctx.settings, now)
    wake: datetime | None = None
    if action.kind == "create_attempt" and action.attempt is not None:
        if action.not_before is not None and action.not_before > now:
            wake = action.not_before
        else:
            ended = next((a for a in attempts if a.number == action.attempt - 1), None)
            obs = await backend.submit(job, action.attempt)
            remote_events.extend(obs.events)
            disrupted = disruption_event(ended, old_status.get("checkpoints")) if ended else None
            if disrupted is not None:
                remote_events.append(disrupted)
            attempts = [a for a in attempts if a.number != action.attempt]
            attempts.append(AttemptObservation(action.attempt, obs))
            ctx.metrics.attempts.labels(engine=job.spec.engine.kind.value).inc()
    elif action.kind == "cancel_attempt" and action.attempt is not None:
        await backend.cancel(job, action.attempt)
        attempts = [
            a if a.number != action.attempt else AttemptObservation(a.number, Observation(state="none"))
            for a in attempts
        ]
    elif action.kind == "delete_job":
        logger.info("deleting %s/%s: %s", ns, name, action.reason)
        await ctx.kube.delete("finetunejobs", ns, name, propagation_policy="Background")
        return
    if action.requeue_after is not None and action.kind != "create_attempt":
        wake = now + timedelta(seconds=action.requeue_after)
    if job.spec.engine.kind not in IN_CLUSTER_ENGINES and attempts and action.kind == "wait":
        poll = now + timedelta(seconds=ctx.settings.hosted_poll_seconds)
        wake = poll if wake is None else min(wake, poll)
    if ask_again:
        soon = now + timedelta(seconds=MIN_REQUEUE_SECONDS)
        wake = soon if wake is None else min(wake, soon)
    new = derive_status(job, observed(), now)
    await _write_status(ctx, body, old_status, new)
    _post_events(ctx, body, remote_events)
    if wake is not None:
        ctx.wake_at(uid, wake, now)
    _observe_start(ctx, job, old_status, new)


def _observe_start(
    ctx: OperatorContext, job: FinetuneJob, old: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    if old.get("phase") != "Running" and new.get("phase") == "Running" and not old.get("startTime"):
        start, created = parse_time(new.get("startTime")), job.metadata.creation_timestamp
        if start is not None and created is not None:
            ctx.metrics.start_latency.observe(max(0.0, (start - created).total_seconds()))


async def _write_status(ctx: OperatorContext, body: JsonDict, old: JsonDict, new: JsonDict) -> None:
    meta = body["metadata"]
    uid = str(meta.get("uid") or "")
    patch = status_patch(old, new)
    if patch is not None:
        updated = await ctx.kube.patch_status("finetunejobs", meta.get("namespace"), meta["name"], patch)
        ctx.cache.put_job(updated)
    ctx.metrics.set_phase(uid, new.get("phase"))
    _post_events(ctx, body, phase_events(old, new))


def phase_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The Events of a status change, kept to phase transitions (one API write each).

    Of :func:`events_for_transition`'s list: the phase event only when the phase changed (a Warning, such
    as a new failure reason, always); ``AttemptFailed`` always; the first attempt's ``AttemptStarted`` is
    folded into the phase event of the same change (reason AttemptStarted, both messages), a retry's is
    posted on its own.
    """
    phase_changed = old.get("phase") != new.get("phase")
    attempts = int(new.get("attempts") or 0)
    out: list[tuple[str, str, str]] = []
    started: tuple[str, str, str] | None = None
    for etype, reason, message in events_for_transition(old, new):
        if reason == "AttemptStarted":
            started = (etype, reason, message)
        elif reason == "AttemptFailed" or etype == "Warning" or phase_changed:
            out.append((etype, reason, message))
    if started is not None:
        first_phase_event = next(
            (i for i, e in enumerate(out) if e[1] != "AttemptFailed" and e[0] == "Normal"), None
        )
        if phase_changed and first_phase_event is not None and attempts <= 1:
            _, _, message = out[first_phase_event]
            out[first_phase_event] = ("Normal", "AttemptStarted", f"{started[2]}: {message}")
        elif attempts > 1 or phase_changed:
            out.append(started)
    return out


def _post_events(ctx: OperatorContext, body: JsonDict, events: list[tuple[str, str, str]]) -> None:
    """Post (type, reason, message) Events in the background, in order (best effort)."""
    if not events:
        return

    async def post_all() -> None:
        for etype, reason, message in events:
            await post_event(ctx, body, etype, reason, message)

    ctx.spawn(post_all(), name=f"events-{body['metadata']['name']}")


def hosted(body: Mapping[str, Any]) -> bool:
    """Whether the job runs on a hosted backend (only those get a finalizer, for the remote cancel)."""
    engine = (body.get("spec") or {}).get("engine") or {}
    return any(k in engine for k in (EngineKind.OPENAI.value, EngineKind.GRADIENT.value))


async def cancel_hosted(ctx: OperatorContext, body: Mapping[str, Any]) -> None:
    """On deletion of a hosted job: cancel the remote run (bounded by hosted_cancel_timeout_seconds)."""
    try:
        job = parse_job(body)
    except SpecError:
        return
    status = body.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or not status.get("attempts"):
        return
    backend: Backend = ctx.backends.get(job.spec.engine.kind, ctx)
    await backend.cancel(job, int(status["attempts"]))
