"""The `gradient` engine: a LoRA adapter trained through a Gradient-compatible API with the `gradientai` SDK.

The SDK is synchronous: every call runs in a worker thread (`asyncio.to_thread`) under a timeout and the
retry policy of `hosted_common`. `submit` validates the inputs JSONL, creates (or re-uses) the model adapter
and starts a training loop task: the samples go to `adapter.fine_tune(samples=...)` in batches of
`batchSize`, `epochs` passes, at most `maxSteps` calls. `observe` reports step, loss and trainable tokens.

Restarts: the adapter id is the remote job id (status.remoteJobId) and the model reference. A restarted
operator has no loop running: `observe` then says `interrupted` (not a failure), and the next `submit`
continues the same adapter from status.progress.step (steps done since the last status write are sent
again: at-least-once). Gradient's public service closed in 2024: `host` must name a compatible server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, cast

from gradientai import Gradient
from gradientai.openapi.client import exceptions as gexc

from ..api.finetunejob import FinetuneJob, GradientEngine, Phase
from .base import Observation
from .chat_format import check_inputs_jsonl
from .hosted_common import (
    DataSourceError,
    HostedContext,
    ProviderError,
    TransientProviderError,
    Verdict,
    bounded,
    classify_status,
    context_from_operator,
    failed_observation,
    job_namespace,
    retry_after_seconds,
    with_retries,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOSED_SERVICE = (
    "spec.engine.gradient.host is required: Gradient's public self-serve API closed in 2024, so a compatible "
    "host must be set"
)


def _body_message(exc: gexc.ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return body or str(exc.reason)
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
        return body
    return str(exc.reason or "error")


def classify_gradient(exc: BaseException) -> Verdict:
    """Map an SDK / urllib3 exception onto retry / permanent failure."""
    if isinstance(exc, gexc.ApiException) and exc.status:
        return classify_status(int(exc.status), _body_message(exc), retry_after_seconds(exc.headers))
    if isinstance(exc, gexc.ApiException | OSError) or type(exc).__module__.startswith("urllib3"):
        return Verdict(True)  # connection refused / reset / DNS / protocol errors
    return Verdict(False)


def _engine(job: FinetuneJob) -> GradientEngine:
    eng = job.spec.engine.gradient
    if eng is None:
        raise ValueError("spec.engine.gradient is not set")
    return eng


@dataclass
class _Run:
    adapter_id: str
    created: bool
    total_steps: int
    step: int
    tokens: int = 0
    loss: float | None = None
    state: str = "running"
    reason: str = "Training"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class GradientBackend:
    """Backend for engine `gradient` (see the module docstring)."""

    name = "gradient"

    def __init__(self, ctx: HostedContext, *, client_factory: Callable[..., Gradient] = Gradient) -> None:
        self.ctx = ctx
        self._client_factory = client_factory
        self._runs: dict[str, _Run] = {}

    def _key(self, job: FinetuneJob, attempt: int) -> str:
        return f"{job_namespace(job)}/{job.metadata.name}/{job.metadata.uid}/{attempt}"

    async def _thread(self, what: str, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return await asyncio.to_thread(fn)

        return await with_retries(
            call, classify_gradient, policy=self.ctx.retry, what=what, sleep=self.ctx.sleep
        )

    async def _client(self, job: FinetuneJob) -> Gradient:
        eng = _engine(job)
        if not eng.host:
            raise ProviderError("InvalidSpec", CLOSED_SERVICE)
        if not eng.workspace_id:
            raise ProviderError("InvalidSpec", "spec.engine.gradient.workspaceId is required")
        token = await self.ctx.read_secret(job_namespace(job), eng.access_token_secret_ref)
        if not token:
            raise ProviderError(
                "Unauthorized",
                f"secret {eng.access_token_secret_ref.name} key {eng.access_token_secret_ref.key} is empty",
            )
        client = self._client_factory(access_token=token, workspace_id=eng.workspace_id, host=eng.host)
        _bound_socket_timeouts(client, self.ctx.retry.call_timeout)
        return client

    # ------------------------------------------------------------------ protocol

    async def submit(self, job: FinetuneJob, attempt: int) -> Observation:
        key = self._key(job, attempt)
        run = self._runs.get(key)
        if run is not None:
            return self._observation(run, job)
        try:
            return await self._start(job, attempt, key)
        except ProviderError as exc:
            return _fail_now(exc)
        except TransientProviderError as exc:
            return Observation(
                state="failed",
                reason="ProviderUnreachable",
                message=f"ProviderUnreachable: {_engine(job).host}: {exc.message}",
            )

    async def _start(self, job: FinetuneJob, attempt: int, key: str) -> Observation:
        eng = _engine(job)
        dataset = job.spec.dataset
        if dataset is None or dataset.train is None:
            return Observation(
                state="invalid", reason="InvalidSpec", message="spec.dataset.train is required"
            )
        try:
            data = await self.ctx.read_data(job_namespace(job), dataset.train)
        except DataSourceError as exc:
            return Observation(state="invalid", reason="DatasetUnavailable", message=bounded(str(exc)))
        report, samples = check_inputs_jsonl(data)
        if not report.ok:
            return Observation(
                state="invalid", reason="InvalidDataset", message=f"spec.dataset.train: {report.summary()}"
            )
        client = await self._client(job)
        status = job.status
        recorded = status.remote_job_id if status else None
        created = eng.model_adapter_id is None
        if eng.model_adapter_id is not None:
            adapter_id = eng.model_adapter_id
            await self._thread(
                "get model adapter", lambda: client.get_model_adapter(model_adapter_id=adapter_id)
            )
        elif recorded:
            adapter_id = recorded
            await self._thread(
                "get model adapter", lambda: client.get_model_adapter(model_adapter_id=adapter_id)
            )
        else:
            slug = str(eng.base_model_slug)
            name = eng.name or f"{job.metadata.name}-{(job.metadata.uid or '')[:8]}"

            def find_base() -> Any:
                try:
                    return client.get_base_model(base_model_slug=slug)
                except StopIteration:  # the SDK's way of saying "no such slug"
                    raise ProviderError(
                        "BaseModelNotFound", f"no base model {slug!r} on {eng.host}"
                    ) from None

            base = await self._thread("find base model", find_base)
            adapter = await self._thread(
                "create model adapter",
                lambda: base.create_model_adapter(name=name, rank=eng.rank, learning_rate=eng.learning_rate),
            )
            adapter_id = adapter.id
        per_epoch = math.ceil(len(samples) / eng.batch_size)
        total = per_epoch * eng.epochs
        if eng.max_steps is not None:
            total = min(total, eng.max_steps)
        start = 0
        tokens = 0
        if recorded == adapter_id and status is not None:
            start = min(total, status.progress.step if status.progress else 0)
            tokens = (status.metrics.trained_tokens or 0) if status.metrics else 0
        run = _Run(
            adapter_id=adapter_id,
            created=created,
            total_steps=total,
            step=start,
            tokens=tokens,
            started_at=_now_iso(self.ctx),
            message=f"training adapter {adapter_id}",
        )
        verb = "continuing" if start or not created else "created"
        run.events.append(
            (
                "Normal",
                "AdapterReady",
                f"{verb} model adapter {adapter_id}; {len(samples)} samples, steps {start}/{total}",
            )
        )
        self._runs[key] = run
        run.task = asyncio.get_running_loop().create_task(
            self._train(client, run, samples, eng.batch_size, per_epoch), name=f"gradient-train-{key}"
        )
        obs = self._observation(run, job)
        return Observation(**{**obs.__dict__, "result": {"dataset": {"trainQueries": len(samples)}}})

    async def _train(
        self, client: Gradient, run: _Run, samples: list[dict[str, Any]], batch_size: int, per_epoch: int
    ) -> None:
        try:
            adapter = await self._thread(
                "get model adapter", lambda: client.get_model_adapter(model_adapter_id=run.adapter_id)
            )
            while run.step < run.total_steps and run.state == "running":
                index = run.step % per_epoch
                batch = samples[index * batch_size : (index + 1) * batch_size]
                resp = await self._thread(
                    f"fine-tune step {run.step + 1}", partial(adapter.fine_tune, samples=cast(Any, batch))
                )
                trainable = int(resp.number_of_trainable_tokens)
                run.tokens += trainable
                run.loss = float(resp.sum_loss) / trainable if trainable else float(resp.sum_loss)
                run.step += 1
            if run.state == "running":
                run.state, run.reason = "succeeded", "Succeeded"
                run.message = f"model adapter {run.adapter_id} trained for {run.step} steps"
                run.finished_at = _now_iso(self.ctx)
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:
            obs = _fail_now(exc)
            run.state, run.reason, run.message = obs.state, obs.reason, obs.message
            run.finished_at = _now_iso(self.ctx)
        except TransientProviderError as exc:
            run.state, run.reason = "failed", "ProviderUnreachable"
            run.message = f"ProviderUnreachable at step {run.step}: {exc.message}"
            run.finished_at = _now_iso(self.ctx)
        except Exception as exc:  # an SDK surprise ends the attempt, never the operator
            log.exception("gradient training loop of adapter %s failed", run.adapter_id)
            run.state, run.reason = "failed", "ProviderError"
            run.message = bounded(f"ProviderError at step {run.step}: {type(exc).__name__}: {exc}")
            run.finished_at = _now_iso(self.ctx)
        finally:
            await asyncio.to_thread(client.close)

    async def observe(self, job: FinetuneJob, attempt: int) -> Observation:
        run = self._runs.get(self._key(job, attempt))
        if run is not None:
            return self._observation(run, job)
        recorded = job.status.remote_job_id if job.status else None
        if recorded:
            step = job.status.progress.step if job.status and job.status.progress else 0
            return Observation(
                state="interrupted",
                reason="OperatorRestarted",
                remote_job_id=recorded,
                message=f"the training loop of adapter {recorded} is not running in this "
                f"operator; it resumes from step {step}",
            )
        return Observation(state="none")

    def _observation(self, run: _Run, job: FinetuneJob) -> Observation:
        events, run.events = run.events, []
        pct = int(100 * run.step / run.total_steps) if run.total_steps else 100
        progress: dict[str, Any] = {
            "step": run.step,
            "totalSteps": run.total_steps,
            "percent": pct,
            "summary": f"{run.step}/{run.total_steps} ({pct}%)",
            "stage": "train",
        }
        if run.loss is not None:
            progress["loss"] = run.loss
        result: dict[str, Any] | None = None
        if run.state == "succeeded":
            eng = _engine(job)
            result = {
                "model": {
                    "format": "gradient",
                    "adapterId": run.adapter_id,
                    "name": run.adapter_id,
                    "baseModel": eng.base_model_slug or eng.model_adapter_id,
                },
                "trainedTokens": run.tokens,
                "trainLoss": run.loss,
            }
        return Observation(
            state=run.state,
            reason=run.reason,
            message=run.message,
            remote_job_id=run.adapter_id,
            progress=progress,
            result=result,
            started_at=run.started_at,
            finished_at=run.finished_at,
            events=events,
            trained_tokens=run.tokens,
        )

    async def cancel(self, job: FinetuneJob, attempt: int) -> None:
        """Stop the loop; with deleteAdapterOnCancel, delete an adapter this job created for an unfinished
        run (never a given modelAdapterId, never a finished adapter: it is the product)."""
        eng = _engine(job)
        run = self._runs.pop(self._key(job, attempt), None)
        finished = (run is not None and run.state == "succeeded") or (
            job.status is not None and job.status.phase == Phase.SUCCEEDED
        )
        if run is not None and run.task is not None and not run.task.done():
            run.state = "failed"
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        adapter_id = run.adapter_id if run is not None else (job.status.remote_job_id if job.status else None)
        if not (
            eng.delete_adapter_on_cancel and eng.model_adapter_id is None and adapter_id and not finished
        ):
            return
        client = await self._client(job)
        try:
            adapter = await self._thread(
                "get model adapter", lambda: client.get_model_adapter(model_adapter_id=adapter_id)
            )
            await asyncio.wait_for(
                self._thread("delete model adapter", adapter.delete), timeout=self.ctx.cancel_timeout
            )
        except ProviderError as exc:
            if exc.status != 404:
                raise
        finally:
            await asyncio.to_thread(client.close)


def _fail_now(exc: ProviderError) -> Observation:
    if exc.reason in ("InvalidSpec", "BaseModelNotFound"):
        return Observation(state="invalid", reason=exc.reason, message=f"{exc.reason}: {exc.message}")
    return failed_observation(exc)


def _now_iso(ctx: HostedContext) -> str:
    return ctx.clock().isoformat().replace("+00:00", "Z")


def _bound_socket_timeouts(client: Gradient, seconds: float) -> None:
    """The SDK sets no socket timeout; give its urllib3 pool one so a hung server frees the worker thread."""
    try:
        import urllib3

        pool: Any = getattr(client, "_api_client").rest_client.pool_manager  # noqa: B009
        pool.connection_pool_kw["timeout"] = urllib3.Timeout(connect=min(10.0, seconds), read=seconds)
        pool.connection_pool_kw["retries"] = urllib3.Retry(total=1, connect=1, read=0, redirect=2)
    except AttributeError:  # another SDK layout: the asyncio timeout still bounds each call
        pass


def make_backend(op_ctx: Any) -> GradientBackend:
    """Registry factory: the Gradient backend of a running operator (see backends.registry)."""
    return GradientBackend(context_from_operator(op_ctx))
