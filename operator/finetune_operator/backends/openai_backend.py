"""The `openai` engine: a finetune proxied to the OpenAI fine-tuning API (or a compatible / Azure-style one).

Runs in the operator's event loop with `openai.AsyncOpenAI` (the SDK's own retries are off: `with_retries`
honours Retry-After on 429, backs off on 5xx, and stops on 401/403 and on a provider refusing new jobs).

Idempotency: every remote job carries metadata naming the FinetuneJob (namespace, name, uid, attempt).
`submit` re-attaches, in this order, to status.remoteJobId (when it belongs to this attempt),
spec.engine.openai.startJobId, or a remote job found by that metadata, before it uploads and creates
anything; so an operator restarted between "create" and "status written" never creates a second job.
The API key is read from the Secret on each call and never logged, put in an Event or in status.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI
from openai.types.fine_tuning import FineTuningJob

from ..api.finetunejob import FinetuneJob, OpenAIEngine
from .base import Observation
from .hosted_common import (
    DataSourceError,
    HostedContext,
    ProviderError,
    Verdict,
    bounded,
    classify_status,
    context_from_operator,
    failed_observation,
    job_identity,
    job_namespace,
    retry_after_seconds,
    with_retries,
)
from .preference_format import check_dataset

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
STATE_MAP = {
    "validating_files": "pending",
    "queued": "pending",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "failed",
}
LIST_PAGES = 3
MAX_CHECKPOINTS = 10
SEEN_EVENTS = 500


def classify_openai(exc: BaseException) -> Verdict:
    """Map an SDK exception onto retry / permanent failure."""
    if isinstance(exc, openai.APIStatusError):
        return classify_status(
            exc.status_code, _error_message(exc), retry_after_seconds(exc.response.headers)
        )
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return Verdict(True)
    if isinstance(exc, openai.APIResponseValidationError):
        return Verdict(False, error=ProviderError("ProviderError", f"unexpected answer: {exc}"))
    return Verdict(False)


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return exc.message


def _iso(ts: int | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def _engine(job: FinetuneJob) -> OpenAIEngine:
    eng = job.spec.engine.openai
    if eng is None:
        raise ValueError("spec.engine.openai is not set")
    return eng


class OpenAIBackend:
    """Backend for engine `openai` (see the module docstring)."""

    name = "openai"

    def __init__(
        self, ctx: HostedContext, *, client_factory: Callable[..., AsyncOpenAI] = AsyncOpenAI
    ) -> None:
        self.ctx = ctx
        self._client_factory = client_factory
        self._seen: dict[str, deque[str]] = {}

    # ------------------------------------------------------------------ plumbing

    async def _client(self, job: FinetuneJob) -> AsyncOpenAI:
        eng = _engine(job)
        key = await self.ctx.read_secret(job_namespace(job), eng.api_key_secret_ref)
        if not key:
            raise ProviderError(
                "Unauthorized",
                f"secret {eng.api_key_secret_ref.name} key {eng.api_key_secret_ref.key} is empty",
            )
        ep = eng.endpoint
        kwargs: dict[str, Any] = {
            "api_key": key,
            "base_url": ep.base_url or DEFAULT_BASE_URL,
            "organization": ep.organization,
            "max_retries": 0,
            "timeout": self.ctx.retry.call_timeout,
        }
        if ep.api_version:  # Azure-style deployment: api-version query and api-key header
            kwargs["default_query"] = {"api-version": ep.api_version}
            kwargs["default_headers"] = {"api-key": key}
        return self._client_factory(**kwargs)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(
            call, classify_openai, policy=self.ctx.retry, what=what, sleep=self.ctx.sleep
        )

    async def _find_remote(self, client: AsyncOpenAI, job: FinetuneJob, attempt: int) -> FineTuningJob | None:
        """A remote job this attempt created, found by its metadata (server filter, checked here too)."""
        ident = job_identity(job, attempt)
        wanted = {k: ident[k] for k in ("finetune-uid", "finetune-attempt")}
        after: str | None = None
        for _ in range(LIST_PAGES):
            kwargs: dict[str, Any] = {"limit": 100, "metadata": wanted}
            if after:
                kwargs["after"] = after
            page = await self._call("list fine-tuning jobs", partial(client.fine_tuning.jobs.list, **kwargs))
            for remote in page.data:
                meta = remote.metadata or {}
                if all(meta.get(k) == v for k, v in wanted.items()):
                    return remote
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id
        return None

    async def _remote_for(self, client: AsyncOpenAI, job: FinetuneJob, attempt: int) -> FineTuningJob | None:
        """The remote job of this attempt: recorded id, startJobId, or metadata search."""
        eng = _engine(job)
        recorded = job.status.remote_job_id if job.status else None
        for candidate in (recorded, eng.start_job_id):
            if not candidate:
                continue
            try:
                remote = await self._call(
                    "retrieve fine-tuning job", partial(client.fine_tuning.jobs.retrieve, candidate)
                )
            except ProviderError as exc:
                if exc.status == 404 and candidate == recorded:
                    continue
                raise
            meta = remote.metadata or {}
            if candidate == eng.start_job_id or meta.get("finetune-attempt") in (None, str(attempt)):
                return remote
        return await self._find_remote(client, job, attempt)

    # ------------------------------------------------------------------ protocol

    async def submit(self, job: FinetuneJob, attempt: int) -> Observation:
        try:
            client = await self._client(job)
        except ProviderError as exc:
            return failed_observation(exc)
        try:
            remote = await self._remote_for(client, job, attempt)
            if remote is not None:
                return await self._observe_remote(client, job, attempt, remote)
            return await self._create(client, job, attempt)
        except ProviderError as exc:
            return failed_observation(exc)
        finally:
            await client.close()

    async def _create(self, client: AsyncOpenAI, job: FinetuneJob, attempt: int) -> Observation:
        eng = _engine(job)
        dataset = job.spec.dataset
        if dataset is None or dataset.train is None:
            return Observation(
                state="invalid",
                reason="InvalidSpec",
                message="spec.dataset.train is required unless engine.openai.startJobId is set",
            )
        ns = job_namespace(job)
        try:
            files = {"train": await self.ctx.read_data(ns, dataset.train)}
            if dataset.validation is not None:
                files["validation"] = await self.ctx.read_data(ns, dataset.validation)
        except DataSourceError as exc:
            return Observation(state="invalid", reason="DatasetUnavailable", message=bounded(str(exc)))
        events: list[tuple[str, str, str]] = []
        counts: dict[str, int] = {}
        billed = 0
        for which, content in files.items():
            report = check_dataset(content, "chat", model=eng.base_model, epochs=eng.hyperparameters.epochs)
            if not report.ok:
                return Observation(
                    state="invalid",
                    reason="InvalidDataset",
                    message=f"spec.dataset.{which}: {report.summary()}",
                )
            counts[which] = report.examples
            if which == "train":
                billed = report.billed_tokens or 0
            events.append(("Normal", "DatasetValidated", f"{which}: {report.summary(400)}"))
        ident = job_identity(job, attempt)
        stem = f"{ident['finetune-namespace']}-{ident['finetune-name']}-a{attempt}"
        file_ids: dict[str, str] = {}
        for which, content in files.items():
            uploaded = await self._call(
                f"upload {which} file",
                partial(
                    client.files.create,
                    file=(f"{stem}-{which}.jsonl", content, "application/jsonl"),
                    purpose="fine-tune",
                ),
            )
            file_ids[which] = uploaded.id
        hp: dict[str, Any] = {}
        if eng.hyperparameters.epochs is not None:
            hp["n_epochs"] = eng.hyperparameters.epochs
        if eng.hyperparameters.batch_size is not None:
            hp["batch_size"] = eng.hyperparameters.batch_size
        if eng.hyperparameters.learning_rate_multiplier is not None:
            hp["learning_rate_multiplier"] = float(eng.hyperparameters.learning_rate_multiplier)
        params: dict[str, Any] = {
            "model": eng.base_model,
            "training_file": file_ids["train"],
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
            "metadata": ident,
        }
        if "validation" in file_ids:
            params["validation_file"] = file_ids["validation"]
        if eng.suffix:
            params["suffix"] = eng.suffix
        if eng.seed is not None:
            params["seed"] = eng.seed
        # A retried create after a lost answer could duplicate the job: look again before each retry.
        remote = await self._create_once(client, job, attempt, params)
        events.append(
            ("Normal", "RemoteJobCreated", f"created fine-tuning job {remote.id} on {eng.base_model}")
        )
        obs = _observation(remote, eng)
        return Observation(
            **{
                **obs.__dict__,
                "events": events + obs.events,
                "result": {
                    "dataset": {
                        "trainQueries": counts.get("train"),
                        "validationQueries": counts.get("validation"),
                    },
                    "estimatedBilledTokens": billed,
                },
            }
        )

    async def _create_once(
        self, client: AsyncOpenAI, job: FinetuneJob, attempt: int, params: dict[str, Any]
    ) -> FineTuningJob:
        async def create() -> FineTuningJob:
            existing = await self._find_remote(client, job, attempt)
            if existing is not None:
                return existing
            return await client.fine_tuning.jobs.create(**params)

        return await self._call("create fine-tuning job", create)

    async def observe(self, job: FinetuneJob, attempt: int) -> Observation:
        try:
            client = await self._client(job)
        except ProviderError as exc:
            return failed_observation(exc)
        try:
            remote = await self._remote_for(client, job, attempt)
            if remote is None:
                return Observation(state="none")
            return await self._observe_remote(client, job, attempt, remote)
        except ProviderError as exc:
            return failed_observation(exc)
        finally:
            await client.close()

    async def _observe_remote(
        self, client: AsyncOpenAI, job: FinetuneJob, attempt: int, remote: FineTuningJob
    ) -> Observation:
        eng = _engine(job)
        obs = _observation(remote, eng)
        key = f"{job.metadata.uid}/{attempt}/{remote.id}"
        seen = self._seen.setdefault(key, deque(maxlen=SEEN_EVENTS))
        page = await self._call(
            "list fine-tuning events",
            lambda: client.fine_tuning.jobs.list_events(remote.id, limit=self.ctx.max_events),
        )
        events: list[tuple[str, str, str]] = []
        progress = dict(obs.progress or {})
        for ev in reversed(page.data):  # the API lists newest first
            if ev.id in seen:
                continue
            seen.append(ev.id)
            kind = "Warning" if ev.level in ("warn", "error") else "Normal"
            events.append((kind, "RemoteEvent", bounded(ev.message, 512)))
        for ev in page.data:  # newest metrics win
            if ev.type == "metrics" and isinstance(ev.data, dict):
                progress.update(_metrics_progress(ev.data))
                break
        cps = await self._call(
            "list checkpoints",
            lambda: client.fine_tuning.jobs.checkpoints.list(remote.id, limit=MAX_CHECKPOINTS),
        )
        checkpoints = [
            {
                k: v
                for k, v in {
                    "step": cp.step_number,
                    "modelId": cp.fine_tuned_model_checkpoint,
                    "loss": cp.metrics.train_loss,
                    "time": _iso(cp.created_at),
                }.items()
                if v is not None
            }
            for cp in sorted(cps.data, key=lambda c: c.step_number)
        ]
        if obs.state in ("succeeded", "failed"):
            self._seen.pop(key, None)
        return Observation(
            **{**obs.__dict__, "events": events, "progress": progress or None, "checkpoints": checkpoints}
        )

    async def cancel(self, job: FinetuneJob, attempt: int) -> None:
        """Cancel the remote job of the attempt; 404 and already-finished jobs are fine. Bounded by
        ctx.cancel_timeout; raises TransientProviderError when the provider cannot be reached in time."""
        try:
            client = await self._client(job)
        except ProviderError as exc:
            log.warning(
                "cannot cancel remote job of %s/%s: %s", job_namespace(job), job.metadata.name, exc.reason
            )
            return
        try:
            remote = await self._remote_for(client, job, attempt)
            if remote is None or remote.status in ("succeeded", "failed", "cancelled"):
                return
            try:
                await self._call("cancel fine-tuning job", lambda: client.fine_tuning.jobs.cancel(remote.id))
            except ProviderError as exc:
                if exc.status in (400, 404, 409):  # gone, or finished in the meantime
                    return
                raise
        except ProviderError as exc:
            if exc.status == 404:
                return
            raise
        finally:
            await client.close()


def _metrics_progress(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data.get("step"), int | float):
        out["step"] = int(data["step"])
    if isinstance(data.get("total_steps"), int | float):
        out["totalSteps"] = int(data["total_steps"])
    if isinstance(data.get("train_loss"), int | float):
        out["loss"] = float(data["train_loss"])
    if "step" in out and out.get("totalSteps"):
        out["percent"] = min(100, int(100 * out["step"] / out["totalSteps"]))
        out["summary"] = f"{out['step']}/{out['totalSteps']} ({out['percent']}%)"
    return out


def _observation(remote: FineTuningJob, eng: OpenAIEngine) -> Observation:
    state = STATE_MAP.get(remote.status, "pending")
    common: dict[str, Any] = {
        "remote_job_id": remote.id,
        "started_at": _iso(remote.created_at),
        "progress": {"stage": remote.status},
        "trained_tokens": remote.trained_tokens,
    }
    if remote.status == "succeeded":
        model = remote.fine_tuned_model
        return Observation(
            state="succeeded",
            reason="Succeeded",
            message=f"fine-tuned model {model}",
            finished_at=_iso(remote.finished_at),
            result={
                "model": {
                    "format": "openai",
                    "baseModel": remote.model,
                    "providerModelId": model,
                    "name": model,
                },
                "trainedTokens": remote.trained_tokens,
            },
            **common,
        )
    if remote.status == "failed":
        err = remote.error
        msg = f"{err.code}: {err.message}" if err and err.message else "the provider reports the job failed"
        return Observation(
            state="failed",
            reason="RemoteJobFailed",
            message=bounded(msg),
            finished_at=_iso(remote.finished_at),
            **common,
        )
    if remote.status == "cancelled":
        return Observation(
            state="failed",
            reason="Cancelled",
            message=f"remote job {remote.id} was cancelled",
            finished_at=_iso(remote.finished_at),
            **common,
        )
    return Observation(
        state=state, reason=remote.status, message=f"remote job {remote.id} is {remote.status}", **common
    )


def make_backend(op_ctx: Any) -> OpenAIBackend:
    """Registry factory: the OpenAI backend of a running operator (see backends.registry)."""
    return OpenAIBackend(context_from_operator(op_ctx))
