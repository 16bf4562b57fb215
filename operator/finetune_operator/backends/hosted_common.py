"""What the hosted-API backends (OpenAI, Gradient) share: context, error classes, retry with backoff.

Hosted backends run inside the operator's event loop. Every remote call is bounded by a timeout and
retried by `with_retries` (429 honours Retry-After, 5xx and connection errors back off exponentially);
permanent errors become a `ProviderError` with a Kubernetes-style reason; when the retry budget of one
call is spent, a `TransientProviderError` tells the caller to come back after `delay` seconds (the
handlers map it onto kopf's TemporaryError) without failing the job.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from ..api.common import SecretKeyRef
from ..api.finetunejob import DataSource, FinetuneJob
from .base import Observation

T = TypeVar("T")
JsonDict = dict[str, Any]

MAX_DATA_BYTES = 512 * 1024 * 1024
MAX_MESSAGE = 1024

# A provider saying it no longer accepts (new) fine-tuning jobs, in the words providers use.
_REFUSAL = re.compile(
    r"no longer (available|accept|support|offer)|not (available|supported|enabled) (for|on|in)|"
    r"(is|has been) (deprecated|discontinued|retired|disabled|sunset)|wind(ing)?[- ]down|"
    r"fine[- ]?tuning (is )?(unavailable|disabled|closed)|new (training |fine[- ]?tuning )?jobs",
    re.IGNORECASE,
)


def now_utc() -> datetime:
    return datetime.now(UTC)


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """Clip a provider message so it fits a condition or an Event."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_KEYISH = (
    (re.compile(r"(api[ _-]?key provided:?\s*)\S+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\b(sk|sess|key)-[A-Za-z0-9_*\-]{3,}"), r"\1-[redacted]"),
    (re.compile(r"(Bearer\s+)\S+", re.IGNORECASE), r"\1[redacted]"),
)


def scrub(text: str, *secrets: str) -> str:
    """Remove credentials (the given secrets, key-like tokens, masked keys echoed by providers)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    for pattern, repl in _KEYISH:
        text = pattern.sub(repl, text)
    return text


def looks_like_refusal(message: str) -> bool:
    """Whether an error message says the provider refuses (new) fine-tuning jobs."""
    return bool(_REFUSAL.search(message))


class ProviderError(Exception):
    """A permanent error: the job fails with `reason` and the provider's own `message`."""

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{reason}: {scrub(message)}")
        self.reason = reason
        self.message = bounded(scrub(message))
        self.status = status


class TransientProviderError(Exception):
    """The provider is busy or unreachable right now; try again after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        self.message = bounded(scrub(message))
        super().__init__(self.message)
        self.delay = delay


FAIL_NOW_REASONS = ("Unauthorized", "ProviderRefused", "SecretNotFound")


def failed_observation(exc: ProviderError) -> Observation:
    """401/403, refusals and a missing Secret fail the job now (state invalid: no retry can help); other
    permanent errors fail the attempt. The message starts with the reason, then the provider's words."""
    state = "invalid" if exc.reason in FAIL_NOW_REASONS else "failed"
    return Observation(state=state, reason=exc.reason, message=bounded(f"{exc.reason}: {exc.message}"))


@dataclass(frozen=True)
class Verdict:
    """How to treat one failed call: retry after `delay` (seconds, None = use backoff) or give up."""

    retry: bool
    delay: float | None = None
    error: ProviderError | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one logical call. Total sleep stays under `max_total_delay`."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_total_delay: float = 60.0
    call_timeout: float = 60.0

    def backoff(self, n: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2**n)))


Sleep = Callable[[float], Awaitable[None]]


async def with_retries(
    call: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], Verdict],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run `call` with a per-try timeout; retry what `classify` says is transient; raise ProviderError on
    permanent errors and TransientProviderError once the budget is spent."""
    slept = 0.0
    last = ""
    delay = policy.base_delay
    for n in range(policy.attempts):
        try:
            return await asyncio.wait_for(call(), timeout=policy.call_timeout)
        except (asyncio.CancelledError, ProviderError, TransientProviderError):
            raise
        except TimeoutError:
            verdict = Verdict(retry=True)
            last = f"{what}: no answer within {policy.call_timeout:g}s"
        except Exception as exc:
            verdict = classify(exc)
            if verdict.error is not None:
                raise verdict.error from exc
            if not verdict.retry:
                raise
            last = f"{what}: {exc}"
        delay = verdict.delay if verdict.delay is not None else policy.backoff(n)
        if n == policy.attempts - 1 or slept + delay > policy.max_total_delay:
            break
        await sleep(delay)
        slept += delay
    raise TransientProviderError(last, delay)


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After (seconds or HTTP date) or retry-after-ms of a response, if any."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - now_utc()).total_seconds())
        except (TypeError, ValueError):
            return None


def classify_status(status: int, message: str, retry_after: float | None) -> Verdict:
    """The common HTTP mapping: refusal, 401/403 Unauthorized, 429 / 5xx / 408 retried, others permanent."""
    if status in (400, 403, 404, 410, 422) and looks_like_refusal(message):
        return Verdict(False, error=ProviderError("ProviderRefused", message, status=status))
    if status in (401, 403):
        return Verdict(False, error=ProviderError("Unauthorized", message, status=status))
    if status == 429 or status >= 500 or status == 408:
        return Verdict(True, delay=retry_after)
    return Verdict(False, error=ProviderError("ProviderError", f"HTTP {status}: {message}", status=status))


# ---------------------------------------------------------------------------- context


ReadSecret = Callable[[str, SecretKeyRef], Awaitable[str]]
ReadData = Callable[[str, DataSource], Awaitable[bytes]]
GetObject = Callable[[str, str, str], Awaitable[JsonDict]]  # (resource plural, namespace, name) -> object


class DataSourceError(Exception):
    """The dataset cannot be read (named field, clear reason)."""


@dataclass
class HostedContext:
    """What hosted backends need from the operator: secrets, data, a clock and their policies."""

    read_secret: ReadSecret
    read_data: ReadData
    clock: Callable[[], datetime] = now_utc
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cancel_timeout: float = 60.0
    sleep: Sleep = asyncio.sleep
    max_events: int = 20


def job_namespace(job: FinetuneJob) -> str:
    return job.metadata.namespace or "default"


def job_identity(job: FinetuneJob, attempt: int) -> dict[str, str]:
    """Metadata attached to remote objects so a restarted operator finds what this attempt created."""
    return {
        "finetune-namespace": job_namespace(job),
        "finetune-name": job.metadata.name or "",
        "finetune-uid": job.metadata.uid or "",
        "finetune-attempt": str(attempt),
    }


async def fetch_url(url: str, *, timeout: float = 120.0, max_bytes: int = MAX_DATA_BYTES) -> bytes:
    """GET an http(s) URL (bounded size and time)."""
    if not url.startswith(("http://", "https://")):
        raise DataSourceError(
            f"dataset url {url!r}: only http(s) URLs can be read by the operator for hosted "
            "engines (s3:// is not supported here)"
        )
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session, session.get(url) as resp:
            if resp.status != 200:
                raise DataSourceError(f"dataset url {url}: HTTP {resp.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise DataSourceError(f"dataset url {url}: larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DataSourceError(f"dataset url {url}: {type(exc).__name__}: {exc}") from exc


def context_from_getter(get: GetObject, **kwargs: Any) -> HostedContext:
    """A HostedContext reading Secrets and ConfigMaps through `get(plural, namespace, name)` (e.g. the
    operator's KubeClient.get) and URLs with aiohttp. PVC data cannot be read by the operator."""

    async def read_secret(namespace: str, ref: SecretKeyRef) -> str:
        try:
            secret = await get("secrets", namespace, ref.name)
        except Exception as exc:
            raise ProviderError("SecretNotFound", f"secret {namespace}/{ref.name}: {exc}") from exc
        data = secret.get("data") or {}
        if ref.key in data:
            return base64.b64decode(data[ref.key]).decode("utf-8").strip()
        string_data = secret.get("stringData") or {}
        if ref.key in string_data:
            return str(string_data[ref.key]).strip()
        raise ProviderError("SecretNotFound", f"secret {namespace}/{ref.name} has no key {ref.key!r}")

    async def read_data(namespace: str, source: DataSource) -> bytes:
        if source.config_map is not None:
            ref = source.config_map
            try:
                cm = await get("configmaps", namespace, ref.name)
            except Exception as exc:
                raise DataSourceError(f"dataset configMap {namespace}/{ref.name}: {exc}") from exc
            if ref.key in (cm.get("data") or {}):
                return str(cm["data"][ref.key]).encode("utf-8")
            if ref.key in (cm.get("binaryData") or {}):
                return base64.b64decode(cm["binaryData"][ref.key])
            raise DataSourceError(f"dataset configMap {namespace}/{ref.name} has no key {ref.key!r}")
        if source.url is not None:
            return await fetch_url(source.url)
        raise DataSourceError(
            "dataset pvc: hosted engines read their data in the operator, which does not mount "
            "volumes; use a configMap or an http(s) url"
        )

    return HostedContext(read_secret=read_secret, read_data=read_data, **kwargs)


def context_from_operator(op_ctx: Any) -> HostedContext:
    """The HostedContext of a running operator: its KubeClient for Secrets/ConfigMaps, its settings for the
    cancel timeout. Retries inside one reconcile stay short (the reconcile holds the job's lock)."""
    settings = op_ctx.settings
    return context_from_getter(
        op_ctx.kube.get,
        cancel_timeout=float(settings.hosted_cancel_timeout_seconds),
        retry=RetryPolicy(
            attempts=3, base_delay=1.0, max_delay=10.0, max_total_delay=20.0, call_timeout=60.0
        ),
    )
