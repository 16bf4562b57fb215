"""Status of a FinetuneJob: computed from observations by pure functions, never accumulated."""

from .actions import Action, backoff_delay, disruption_event, events_for_transition, next_action
from .derive import CONDITION_TYPES, derive_status, status_patch
from .observed import AttemptObservation, Observed
from .sections import MAX_CHECKPOINTS

__all__ = [
    "CONDITION_TYPES",
    "MAX_CHECKPOINTS",
    "Action",
    "AttemptObservation",
    "Observed",
    "backoff_delay",
    "derive_status",
    "disruption_event",
    "events_for_transition",
    "next_action",
    "status_patch",
]
