"""The admission hook: whether a valid FinetuneJob may start now.

The quota engine plugs in here later (TrainingQuota). Until then every valid job is admitted. A hook is an
`async def (job, ctx) -> AdmissionDecision`; the operator context keeps the one in use
(`OperatorContext.admit`), so a test or the quota package can swap it without touching the handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .api.finetunejob import FinetuneJob


@dataclass(frozen=True)
class AdmissionDecision:
    """The answer of an admission hook."""

    admitted: bool
    reason: str = "Admitted"
    message: str = ""
    queue_position: int | None = None
    admitted_by: list[str] = field(default_factory=list)


AdmitFn = Callable[[FinetuneJob, Any], Awaitable[AdmissionDecision]]


async def admit(job: FinetuneJob, ctx: Any) -> AdmissionDecision:
    """The default hook: admit every valid job (no quotas configured)."""
    del ctx
    return AdmissionDecision(
        admitted=True, reason="Admitted", message=f"{job.metadata.name} admitted (no quota applies)"
    )
