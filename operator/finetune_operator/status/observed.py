"""What the handlers can see of a FinetuneJob, as plain frozen data for the pure status derivation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.errors import SpecError
from ..backends.base import Observation

# Observation.state values
NONE = "none"
PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
INVALID = "invalid"
SUSPENDED = "suspended"
DEADLINE = "deadline"
ACTIVE_STATES = frozenset({PENDING, RUNNING})
ENDED_STATES = frozenset({SUCCEEDED, FAILED, INTERRUPTED, INVALID, DEADLINE})

# Reasons (CamelCase, machine-readable).
R_INVALID_SPEC = "InvalidSpec"
R_QUOTA_EXCEEDED = "QuotaExceeded"
R_EXCEEDS_QUOTA = "ExceedsQuota"
R_ADMITTED = "Admitted"
R_AWAITING_ADMISSION = "AwaitingAdmission"
R_QUEUED_IN_KUEUE = "QueuedInKueue"
R_TRAINER_STARTING = "TrainerStarting"
R_TRAINING = "Training"
R_RETRYING = "Retrying"
R_RESTARTING = "Restarting"
R_BACKOFF_LIMIT = "BackoffLimitExceeded"
R_INVALID_DATA = "InvalidData"
R_DEADLINE = "DeadlineExceeded"
R_SUSPENDED = "Suspended"
R_SUSPENDING = "Suspending"
R_SUCCEEDED = "Succeeded"
R_PROGRESSING = "Progressing"


@dataclass(frozen=True)
class AttemptObservation:
    """One attempt (1-based `number`) and what its backend saw of it."""

    number: int
    observation: Observation

    @property
    def state(self) -> str:
        return self.observation.state

    @property
    def disruption(self) -> bool:
        """Ended by eviction, preemption, node loss or a graceful SIGTERM stop: never counts as a failure."""
        return self.observation.disruption or self.observation.state == INTERRUPTED

    @property
    def counts_as_failure(self) -> bool:
        return self.observation.state == FAILED and not self.observation.disruption


@dataclass(frozen=True)
class Observed:
    """Everything derive_status / next_action read besides the FinetuneJob itself and the clock.

    * `spec_error`: the spec did not validate (the job is then given as its raw body).
    * `admitted`: None while no admission decision was made, True/False after; `admission_reason`
      "ExceedsQuota" means the job can never fit (terminal), anything else while False means queued.
    * `attempts`: every attempt the handlers know of, in any order.
    * `suspended`: the handlers saw the job suspended (spec.runPolicy.suspend is read from the job as well).
    * `deadline_exceeded`: a backend reported the deadline (the operator's own deadline, measured from
      status.startTime, is computed here as well).
    * `trainer_progress` / `trainer_checkpoints`: status.progress / status.checkpoints as the trainer
      patched them (None: taken from the job's current status).
    """

    spec_error: SpecError | None = None
    admitted: bool | None = None
    admission_reason: str = ""
    admission_message: str = ""
    queue_position: int | None = None
    admitted_by: tuple[str, ...] = ()
    attempts: tuple[AttemptObservation, ...] = ()
    suspended: bool = False
    deadline_exceeded: bool = False
    remote_job_id: str | None = None
    trainer_progress: dict[str, Any] | None = None
    trainer_checkpoints: dict[str, Any] | None = None
    now: datetime | None = None

    @property
    def latest(self) -> AttemptObservation | None:
        return max(self.attempts, key=lambda a: a.number) if self.attempts else None

    @property
    def failed_attempts(self) -> int:
        return sum(1 for a in self.attempts if a.counts_as_failure)

    @property
    def started_attempts(self) -> int:
        started = [a.number for a in self.attempts if a.state not in (NONE, SUSPENDED)]
        return max(started) if started else 0
