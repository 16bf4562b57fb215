"""Asking an OpenAI-compatible chat-completions endpoint, with a concurrency limit and retries."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from .errors import GenerationError

log = logging.getLogger(__name__)

API_KEY_ENV = "FINETUNE_LLM_API_KEY"
API_KEY_FILE_ENV = "FINETUNE_LLM_API_KEY_FILE"
NO_KEY = "EMPTY"  # what vLLM and similar servers accept when they run without a key
_MAX_RETRY_AFTER = 300.0

SleepFn = Callable[[float], Awaitable[None]]


def read_api_key(env_var: str = API_KEY_ENV, file: str | None = None) -> str | None:
    """The LLM API key from a file (mounted Secret) or an environment variable; None if neither is set.

    `file` defaults to the path in $FINETUNE_LLM_API_KEY_FILE. The key is never logged.
    """
    file = file or os.environ.get(API_KEY_FILE_ENV)
    if file:
        try:
            key = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GenerationError(f"LLM API key file {file}: cannot be read: {exc.strerror}") from exc
        return key or None
    value = os.environ.get(env_var, "").strip()
    return value or None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


@dataclass
class Usage:
    """Requests sent and tokens used, summed over a run."""

    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class QuestionClient:
    """Sends one prompt per call to `/chat/completions`, at most `max_concurrency` at once.

    Retries 429, 5xx, timeouts and connection errors up to `max_retries` times with exponential backoff
    (`backoff_base` * 2**attempt, capped at `backoff_max`, with jitter), waiting at least the server's
    Retry-After. Other errors (400, 401, 404, ...) fail at once.
    """

    base_url: str
    model: str
    api_key: str | None = None
    temperature: float = 0.2
    max_concurrency: int = 4
    max_retries: int = 5
    timeout: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    sleep: SleepFn = asyncio.sleep
    usage: Usage = field(default_factory=Usage)
    _client: openai.AsyncOpenAI | None = field(default=None, init=False, repr=False)
    _semaphore: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:  # never show the key
        return f"QuestionClient(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> QuestionClient:
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or NO_KEY, max_retries=0, timeout=self.timeout
        )
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.backoff_max, self.backoff_base * (2**attempt))
        backoff *= 1 + random.random() * 0.25  # jitter
        return float(max(backoff, retry_after)) if retry_after is not None else float(backoff)

    async def complete(self, prompt: str) -> str:
        """The assistant message for `prompt`; raises GenerationError once retries are exhausted."""
        if self._client is None or self._semaphore is None:
            raise RuntimeError("QuestionClient must be used as an async context manager")
        attempt = 0
        while True:
            retry_after: float | None = None
            async with self._semaphore:
                self.usage.requests += 1
                try:
                    response = await self._client.chat.completions.create(
                        model=self.model,
                        messages=[{"role": "user", "content": prompt}],
                        temperature=self.temperature,
                    )
                except (openai.RateLimitError, openai.InternalServerError) as exc:
                    self.usage.failed_requests += 1
                    what = f"HTTP {exc.status_code}"
                    retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                    err: Exception = exc
                except openai.APIStatusError as exc:
                    self.usage.failed_requests += 1
                    if exc.status_code >= 500:
                        what, err = f"HTTP {exc.status_code}", exc
                        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                    else:
                        raise GenerationError(
                            f"LLM at {self.base_url} refused the request (model {self.model!r}): "
                            f"HTTP {exc.status_code}: {_short(exc.message)}"
                        ) from exc
                except openai.APIConnectionError as exc:  # includes APITimeoutError
                    self.usage.failed_requests += 1
                    what, err = (
                        (
                            "timed out"
                            if isinstance(exc, openai.APITimeoutError)
                            else f"unreachable ({_cause(exc)})"
                        ),
                        exc,
                    )
                else:
                    return self._record(response)
            if attempt >= self.max_retries:
                raise GenerationError(
                    f"LLM at {self.base_url}: {what} after {attempt + 1} attempt(s)", retryable=True
                ) from err
            delay = self._delay(attempt, retry_after)
            log.warning(
                "LLM at %s: %s; retrying in %.1fs (retry %d of %d)",
                self.base_url,
                what,
                delay,
                attempt + 1,
                self.max_retries,
            )
            self.usage.retries += 1
            attempt += 1
            await self.sleep(delay)

    def _record(self, response: Any) -> str:
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.usage.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        choices = getattr(response, "choices", None) or []
        if not choices:
            return ""
        content = choices[0].message.content
        return content if isinstance(content, str) else ""


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    return _short(str(cause) or type(cause).__name__) if cause is not None else _short(str(exc))
