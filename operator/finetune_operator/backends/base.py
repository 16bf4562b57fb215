"""The backend protocol: submit, observe, cancel (after Kubeflow Trainer's runtime interface).

A backend never writes status itself: `observe` returns an Observation that the pure status derivation
(`finetune_operator.status`) turns into phase, conditions and progress. This module stays pure (the status
derivation imports it); the I/O ports a backend is given are in `backends.ports`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..api.finetunejob import FinetuneJob


@dataclass(frozen=True)
class Observation:
    """What a backend saw of one attempt. Everything is optional: a backend fills what it knows."""

    state: str  # "none" (nothing submitted), "pending", "running", "succeeded", "failed", "interrupted",
    # "invalid" (bad data/config: fail now), "suspended", "deadline"
    message: str = ""
    reason: str = ""
    remote_job_id: str | None = None
    progress: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None  # trainer result / provider result
    started_at: str | None = None
    finished_at: str | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    disruption: bool = False  # the failure was an eviction/preemption/node loss
    trained_tokens: int | None = None
    nodes: tuple[dict[str, Any], ...] = ()  # multi-pod attempts: {index, phase, ready} per trainer pod


class Backend(Protocol):
    """One way of training."""

    name: str

    async def submit(self, job: FinetuneJob, attempt: int) -> Observation:
        """Start attempt `attempt` of the job, idempotently (a second call must not start a second run)."""
        ...

    async def observe(self, job: FinetuneJob, attempt: int) -> Observation:
        """Look at the attempt without changing anything."""
        ...

    async def cancel(self, job: FinetuneJob, attempt: int) -> None:
        """Stop the attempt gracefully (idempotent; a missing run is not an error)."""
        ...
