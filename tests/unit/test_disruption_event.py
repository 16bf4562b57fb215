"""The Event of an attempt ended by a disruption: which pod, why, and the checkpoint the next attempt
resumes from; none for attempts that failed, or that the trainer ended itself (exit 4)."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_operator.backends.base import Observation
from finetune_operator.backends.incluster import observe_pods
from finetune_operator.status import AttemptObservation, disruption_event

pytestmark = pytest.mark.unit


def _evicted_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "ft-a1-x7k2p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Failed",
            "startTime": "2026-01-01T00:00:01Z",
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting",
                }
            ],
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"terminated": {"exitCode": 4, "finishedAt": "2026-01-01T00:05:00Z"}},
                }
            ],
        },
    }


def test_eviction_event_names_pod_reason_and_checkpoint() -> None:
    obs = observe_pods({"metadata": {"name": "ft-a1"}, "status": {}}, [_evicted_pod()])
    assert obs.disruption and obs.reason == "EvictionByEvictionAPI"
    checkpoints = {"latest": {"step": 40, "uri": "pvc://models/runs/default/ft/checkpoints/checkpoint-40"}}
    event = disruption_event(AttemptObservation(1, obs), checkpoints)
    assert event is not None
    etype, reason, message = event
    assert (etype, reason) == ("Warning", "AttemptDisrupted")
    assert (
        "ft-a1-x7k2p" in message
        and "EvictionByEvictionAPI" in message
        and "Eviction API: evicting" in message
    )
    assert "attempt 2 resumes from checkpoint at step 40" in message and "checkpoint-40" in message
    assert "not counted as a failure" in message


def test_no_checkpoint_yet_resumes_from_the_start() -> None:
    obs = observe_pods({"metadata": {"name": "ft-a1"}, "status": {}}, [_evicted_pod()])
    event = disruption_event(AttemptObservation(3, obs), None)
    assert event is not None and "attempt 4 resumes from the start (no checkpoint yet)" in event[2]


@pytest.mark.parametrize(
    "obs",
    [
        Observation(state="failed", reason="Error", message="trainer exited with code 1"),
        Observation(state="interrupted", reason="Interrupted"),  # the trainer's own graceful stop (exit 4)
        Observation(state="succeeded"),
    ],
)
def test_no_event_without_a_disruption(obs: Observation) -> None:
    assert disruption_event(AttemptObservation(1, obs), {"latest": {"step": 1}}) is None
