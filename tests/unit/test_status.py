"""Status derivation: transitions table with an injected clock, stable lastTransitionTime, patch-on-change,
backoff schedule, disruptions, TTL and deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from finetune_operator.api import FinetuneJobStatus, SpecError, parse_job
from finetune_operator.api.finetunejob import FinetuneJob
from finetune_operator.backends.base import Observation
from finetune_operator.config import Settings
from finetune_operator.status import (
    CONDITION_TYPES,
    MAX_CHECKPOINTS,
    AttemptObservation,
    Observed,
    backoff_delay,
    derive_status,
    events_for_transition,
    next_action,
    status_patch,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_job(
    run_policy: dict[str, Any] | None = None, status: dict[str, Any] | None = None, generation: int = 1
) -> FinetuneJob:
    body: dict[str, Any] = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1", "generation": generation},
        "spec": {
            "engine": {"adapter": {}},
            "dataset": {"train": {"url": "https://example.com/train.json"}},
            "output": {"storageUri": "pvc://models/out"},
            "runPolicy": run_policy or {},
        },
    }
    if status:
        body["status"] = status
    return parse_job(body)


def att(
    n: int, state: str, start: datetime | None = None, end: datetime | None = None, **kw: Any
) -> AttemptObservation:
    return AttemptObservation(
        n,
        Observation(
            state=state, started_at=iso(start) if start else None, finished_at=iso(end) if end else None, **kw
        ),
    )


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


RESULT = {
    "storageUri": "/output/out/ns/demo/model",
    "format": "adapter",
    "metrics": {"before": {"mrrAt10": 0.4, "hitRateAt1": 0.3}, "after": {"mrrAt10": 0.6}},
    "trainLoss": 0.12,
    "samplesPerSecond": 50.0,
    "wallSeconds": 30.0,
    "dataset": {"trainQueries": 80, "validation_queries": 20},
}

TABLE: list[tuple[str, Observed, str, str]] = [
    ("awaiting admission", Observed(), "Pending", "AwaitingAdmission"),
    (
        "queued",
        Observed(
            admitted=False,
            admission_reason="QuotaExceeded",
            admission_message="quota q: gpus 4/4",
            queue_position=3,
        ),
        "Queued",
        "QuotaExceeded",
    ),
    ("never fits", Observed(admitted=False, admission_reason="ExceedsQuota"), "Failed", "ExceedsQuota"),
    ("admitted, nothing yet", Observed(admitted=True), "Pending", "TrainerStarting"),
    ("pod pending", Observed(admitted=True, attempts=(att(1, "pending"),)), "Pending", "TrainerStarting"),
    ("kueue gate", Observed(admitted=True, attempts=(att(1, "suspended"),)), "Queued", "QueuedInKueue"),
    ("running", Observed(admitted=True, attempts=(att(1, "running", T0),)), "Running", "Training"),
    ("failed once", Observed(admitted=True, attempts=(att(1, "failed", T0, T0),)), "Running", "Retrying"),
    (
        "evicted",
        Observed(admitted=True, attempts=(att(1, "failed", T0, T0, disruption=True),)),
        "Running",
        "Restarting",
    ),
    (
        "invalid data",
        Observed(admitted=True, attempts=(att(1, "invalid", T0, T0, message="bad ids q1"),)),
        "Failed",
        "InvalidData",
    ),
    (
        "backoff exhausted",
        Observed(admitted=True, attempts=tuple(att(i, "failed", T0, T0) for i in (1, 2, 3, 4))),
        "Failed",
        "BackoffLimitExceeded",
    ),
    (
        "succeeded",
        Observed(
            admitted=True, attempts=(att(1, "failed", T0, T0), att(2, "succeeded", T0, T0, result=RESULT))
        ),
        "Succeeded",
        "Succeeded",
    ),
    (
        "backend deadline",
        Observed(admitted=True, attempts=(att(1, "deadline", T0, T0),)),
        "Failed",
        "DeadlineExceeded",
    ),
    (
        "suspended while running",
        Observed(admitted=True, suspended=True, attempts=(att(1, "running", T0),)),
        "Suspended",
        "Suspending",
    ),
    (
        "suspended",
        Observed(admitted=True, suspended=True, attempts=(att(1, "interrupted", T0, T0),)),
        "Suspended",
        "Suspended",
    ),
]


@pytest.mark.parametrize(("case", "obs", "phase", "reason"), TABLE, ids=[t[0] for t in TABLE])
def test_transition_table(case: str, obs: Observed, phase: str, reason: str) -> None:
    status = derive_status(make_job(), obs, T0 + timedelta(minutes=5))
    FinetuneJobStatus.model_validate(status)  # a valid status, camelCase
    assert status["phase"] == phase, case
    c = conds(status)
    assert set(c) == set(CONDITION_TYPES)
    assert c[phase if phase in ("Running", "Succeeded", "Failed", "Suspended") else "Ready"][1] in (
        reason,
        "Progressing",
    )
    assert status["message"]
    assert (
        all(x["observedGeneration"] == 1 for x in status["conditions"]) and status["observedGeneration"] == 1
    )
    assert c["Succeeded"][0] == ("True" if phase == "Succeeded" else "False")
    assert c["Failed"][0] == ("True" if phase == "Failed" else "False")
    assert c["Stalled"][0] == c["Failed"][0]
    assert c["Reconciling"][0] == ("True" if phase in ("Pending", "Queued", "Running") else "False")
    ready = c["Ready"]
    if phase == "Succeeded":
        assert ready == ("True", "Succeeded")
    elif phase == "Failed":
        assert ready == ("False", reason)
    elif phase != "Suspended":
        assert ready == ("False", "Progressing")
    if phase == "Queued" and case == "queued":
        assert status["queuePosition"] == 3 and c["Admitted"] == ("False", "QuotaExceeded")
    if phase in ("Running", "Succeeded"):
        assert c["Admitted"] == ("True", "Admitted")
    if phase in ("Succeeded", "Failed"):
        assert "completionTime" in status
    else:
        assert "completionTime" not in status


def test_succeeded_status_carries_result() -> None:
    obs = Observed(
        admitted=True,
        attempts=(
            att(1, "failed", T0, T0 + timedelta(seconds=5)),
            att(2, "succeeded", T0 + timedelta(seconds=20), T0 + timedelta(minutes=3), result=RESULT),
        ),
    )
    s = derive_status(make_job(), obs, T0 + timedelta(minutes=4))
    assert s["model"]["storageUri"] == "pvc://models/out/ns/demo/model" == s["model"]["name"]
    assert s["model"]["format"] == "adapter" and s["model"]["baseModel"]
    assert s["metrics"]["before"]["mrrAt10"] == 0.4 and s["metrics"]["after"]["mrrAt10"] == 0.6
    assert s["metrics"]["trainLoss"] == 0.12 and s["metrics"]["wallSeconds"] == 30.0
    assert s["dataset"] == {"trainQueries": 80, "validationQueries": 20}
    assert s["attempts"] == 2 and s["failedAttempts"] == 1
    assert s["startTime"] == iso(T0) and s["completionTime"] == iso(T0 + timedelta(minutes=3))


def test_generate_only_job_has_no_model() -> None:
    result = {
        "status": "succeeded",
        "generateOnly": True,
        "dataset": {"trainUri": "pvc://models/out/ns/demo/dataset/train.json", "trainQueries": 40},
    }
    obs = Observed(
        admitted=True, attempts=(att(1, "succeeded", T0, T0 + timedelta(minutes=1), result=result),)
    )
    s = derive_status(make_job(), obs, T0 + timedelta(minutes=2))
    assert s["phase"] == "Succeeded"
    assert "model" not in s
    assert s["dataset"]["trainUri"].endswith("dataset/train.json")


def test_invalid_spec_from_raw_body() -> None:
    body = {"metadata": {"name": "bad", "generation": 2}, "spec": {"engine": {}}}
    try:
        parse_job({"apiVersion": "finetune.dev/v1alpha1", "kind": "FinetuneJob", **body})
    except SpecError as exc:
        err = exc
    else:  # pragma: no cover
        pytest.fail("spec should be invalid")
    s = derive_status(body, Observed(spec_error=err), T0)
    assert s["phase"] == "Failed" and conds(s)["Failed"] == ("True", "InvalidSpec")
    assert "spec.engine" in s["message"] and s["observedGeneration"] == 2
    assert conds(s)["Ready"] == ("False", "InvalidSpec")
    assert next_action(body, Observed(spec_error=err), Settings(), T0).kind == "nothing"


def test_last_transition_time_is_stable() -> None:
    obs = Observed(admitted=True, attempts=(att(1, "running", T0),))
    first = derive_status(make_job(), obs, T0)
    later = derive_status(make_job(status=first), obs, T0 + timedelta(minutes=10))
    assert later == first
    assert status_patch(first, later) is None
    done = Observed(
        admitted=True, attempts=(att(1, "succeeded", T0, T0 + timedelta(minutes=11), result=RESULT),)
    )
    t2 = T0 + timedelta(minutes=12)
    final = derive_status(make_job(status=first), done, t2)
    by_type = {c["type"]: c for c in final["conditions"]}
    assert by_type["Admitted"]["lastTransitionTime"] == iso(T0)  # still True
    assert by_type["Succeeded"]["lastTransitionTime"] == iso(t2)  # False -> True
    assert by_type["Running"]["lastTransitionTime"] == iso(t2)  # True -> False
    # status_patch also keeps lastTransitionTime when a status did not change
    fresh = derive_status(make_job(), obs, T0 + timedelta(hours=1))
    patch = status_patch(first, fresh)
    assert patch is None


def test_patch_only_changes() -> None:
    old = derive_status(
        make_job(),
        Observed(
            admitted=True, attempts=(att(1, "running", T0),), trainer_progress={"step": 10, "totalSteps": 40}
        ),
        T0,
    )
    assert old["progress"]["summary"] == "10/40 (25%)" and old["progress"]["percent"] == 25
    new = derive_status(
        make_job(status=old),
        Observed(
            admitted=True, attempts=(att(1, "running", T0),), trainer_progress={"step": 20, "totalSteps": 40}
        ),
        T0,
    )
    patch = status_patch(old, new)
    assert patch == {"progress": new["progress"]}
    assert status_patch(None, new) == new
    assert status_patch({**new, "queuePosition": 2}, new) == {"queuePosition": None}


def test_sticky_terminal_phase() -> None:
    done = derive_status(
        make_job(), Observed(admitted=True, attempts=(att(1, "succeeded", T0, T0, result=RESULT),)), T0
    )
    again = derive_status(make_job(status=done), Observed(admitted=True), T0 + timedelta(hours=1))
    assert again["phase"] == "Succeeded" and again["completionTime"] == done["completionTime"]
    assert status_patch(done, again) is None


def test_checkpoints_bounded_and_merged() -> None:
    trainer = {"latest": {"step": 5}, "items": [{"step": s, "uri": f"pvc://c/{s}"} for s in range(1, 6)]}
    extra = [{"step": s, "uri": f"pvc://c/{s}"} for s in range(6, 20)]
    s = derive_status(
        make_job(),
        Observed(
            admitted=True, attempts=(att(1, "running", T0, checkpoints=extra),), trainer_checkpoints=trainer
        ),
        T0,
    )
    items = s["checkpoints"]["items"]
    assert len(items) == MAX_CHECKPOINTS and [i["step"] for i in items] == list(range(10, 20))
    assert s["checkpoints"]["latest"]["step"] == 19


def test_disruptions_do_not_count() -> None:
    obs = Observed(
        admitted=True,
        attempts=(
            att(1, "failed", T0, T0, disruption=True),
            att(2, "interrupted", T0, T0),
            att(3, "failed", T0, T0),
            att(4, "failed", T0, T0, disruption=True),
            att(5, "failed", T0, T0),
            att(6, "failed", T0, T0),
        ),
    )
    s = derive_status(make_job({"backoffLimit": 3}), obs, T0)
    assert s["failedAttempts"] == 3 and s["phase"] == "Running" and s["attempts"] == 6
    a = next_action(make_job({"backoffLimit": 3}), obs, Settings(), T0)
    assert a.kind == "create_attempt" and a.attempt == 7
    evicted = Observed(
        admitted=True, attempts=(att(1, "failed", T0, T0), att(2, "failed", T0, T0, disruption=True))
    )
    b = next_action(make_job(), evicted, Settings(retry_backoff_seconds=30), T0)
    assert b.kind == "create_attempt" and b.attempt == 3 and b.not_before == T0 and b.requeue_after == 0


def test_backoff_schedule() -> None:
    s = Settings(retry_backoff_seconds=10, retry_backoff_max_seconds=60)
    assert [backoff_delay(s, n) for n in range(6)] == [0, 10, 20, 40, 60, 60]
    end = T0 + timedelta(minutes=1)
    fails = tuple(att(i, "failed", T0, end) for i in (1, 2))
    a = next_action(
        make_job({"backoffLimit": 5}), Observed(admitted=True, attempts=fails), s, end + timedelta(seconds=5)
    )
    assert a.kind == "create_attempt" and a.attempt == 3
    assert a.not_before == end + timedelta(seconds=20) and a.requeue_after == 15
    b = next_action(
        make_job({"backoffLimit": 5}), Observed(admitted=True, attempts=fails), s, end + timedelta(seconds=25)
    )
    assert b.not_before == end + timedelta(seconds=25) and b.requeue_after == 0


def test_next_action_basics() -> None:
    st = Settings()
    assert next_action(make_job(), Observed(), st, T0).kind == "wait"
    first = next_action(make_job(), Observed(admitted=True), st, T0)
    assert (first.kind, first.attempt) == ("create_attempt", 1)
    assert (
        next_action(make_job(), Observed(admitted=True, attempts=(att(1, "running", T0),)), st, T0).kind
        == "wait"
    )
    sus = next_action(
        make_job({"suspend": True}), Observed(admitted=True, attempts=(att(2, "running", T0),)), st, T0
    )
    assert (sus.kind, sus.attempt) == ("cancel_attempt", 2)
    resumed = next_action(
        make_job(), Observed(admitted=True, attempts=(att(2, "interrupted", T0, T0),)), st, T0
    )
    assert (resumed.kind, resumed.attempt) == ("create_attempt", 3)
    assert (
        next_action(
            make_job({"suspend": True}),
            Observed(admitted=True, attempts=(att(2, "interrupted", T0, T0),)),
            st,
            T0,
        ).kind
        == "nothing"
    )


def test_deadline() -> None:
    job = make_job({"activeDeadlineSeconds": 600})
    running = Observed(admitted=True, attempts=(att(1, "running", T0),))
    a = next_action(job, running, Settings(), T0 + timedelta(seconds=100))
    assert a.kind == "wait" and a.requeue_after == 500
    s = derive_status(job, running, T0 + timedelta(seconds=600))
    assert s["phase"] == "Failed" and conds(s)["Failed"] == ("True", "DeadlineExceeded")
    cancel = next_action(job, running, Settings(), T0 + timedelta(seconds=601))
    assert (cancel.kind, cancel.attempt) == ("cancel_attempt", 1)
    # measured across attempts, from the first start
    retry = Observed(
        admitted=True,
        attempts=(
            att(1, "failed", T0, T0 + timedelta(seconds=30)),
            att(2, "running", T0 + timedelta(seconds=300)),
        ),
    )
    assert derive_status(job, retry, T0 + timedelta(seconds=650))["phase"] == "Failed"


def test_ttl() -> None:
    job = make_job({"ttlSecondsAfterFinished": 60})
    end = T0 + timedelta(minutes=2)
    done = Observed(admitted=True, attempts=(att(1, "succeeded", T0, end, result=RESULT),))
    a = next_action(job, done, Settings(), end + timedelta(seconds=20))
    assert a.kind == "wait" and a.requeue_after == 40
    assert next_action(job, done, Settings(), end + timedelta(seconds=60)).kind == "delete_job"
    # after an operator restart, the recorded completionTime is what counts
    status = derive_status(job, done, end + timedelta(seconds=5))
    restarted = make_job({"ttlSecondsAfterFinished": 60}, status=status)
    assert (
        next_action(restarted, Observed(admitted=True), Settings(), end + timedelta(seconds=61)).kind
        == "delete_job"
    )
    assert next_action(make_job(), done, Settings(), end + timedelta(days=9)).kind == "nothing"


def test_events_for_transitions() -> None:
    pending = derive_status(make_job(), Observed(admitted=True), T0)
    running = derive_status(
        make_job(status=pending), Observed(admitted=True, attempts=(att(1, "running", T0),)), T0
    )
    ev = events_for_transition(pending, running)
    assert ("Normal", "Training", "attempt 1 is training") in ev
    assert ("Normal", "AttemptStarted", "attempt 1 started") in ev
    failed = derive_status(
        make_job({"backoffLimit": 0}, status=running),
        Observed(admitted=True, attempts=(att(1, "failed", T0, T0, message="OOM"),)),
        T0,
    )
    ev2 = events_for_transition(running, failed)
    assert ev2[0][0] == "Warning" and ev2[0][1] == "BackoffLimitExceeded" and "OOM" in ev2[0][2]
    assert events_for_transition(running, running) == []
    assert events_for_transition(None, pending)[0][1] == "TrainerStarting"


def test_clock_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        derive_status(make_job(), Observed(), datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize("reason", ["Unauthorized", "ProviderRefused"])
def test_provider_reason_becomes_the_failed_reason(reason: str) -> None:
    obs = Observed(
        admitted=True, attempts=(att(1, "invalid", T0, T0, reason=reason, message=f"{reason}: no"),)
    )
    s = derive_status(make_job(), obs, T0 + timedelta(minutes=1))
    c = conds(s)
    assert s["phase"] == "Failed" and c["Failed"] == ("True", reason) and c["Ready"] == ("False", reason)
    assert f"{reason}: no" in s["message"]
    assert events_for_transition({}, s)[0][:2] == ("Warning", reason)
    plain = derive_status(make_job(), Observed(admitted=True, attempts=(att(1, "invalid", T0, T0),)), T0)
    assert conds(plain)["Failed"] == ("True", "InvalidData")


def test_failed_status_is_stable_without_observations() -> None:
    """A terminal job is not observed again: deriving it with no attempts must change nothing."""
    obs = Observed(
        admitted=True,
        attempts=(att(1, "invalid", T0, T0, reason="Unauthorized", checkpoints=[{"step": 3, "loss": 0.5}]),),
    )
    done = derive_status(make_job(), obs, T0)
    again = derive_status(make_job(status=done), Observed(admitted=True), T0 + timedelta(hours=1))
    assert again["phase"] == "Failed" and status_patch(done, again) is None


def _selection_result(improved: bool) -> dict[str, Any]:
    after = 0.6 if improved else 0.4
    msg = (
        "validation MRR@10 0.4000 -> 0.6000 (+0.2000), best at step 40"
        if improved
        else "no evaluation beat the base model: validation MRR@10 0.4000 -> 0.4000 (best at step 0 of 80); "
        "the best model evaluated is published (the base model)"
    )
    return {
        **RESULT,
        "metrics": {
            "before": {"mrrAt10": 0.4},
            "after": {"mrrAt10": after},
            "bestStep": 40 if improved else 0,
            "selectionMetric": "mrrAt10",
            "stoppedEarly": not improved,
            "modelImproved": improved,
            "improvementMessage": msg,
            "validationCurve": [{"step": 0, "mrrAt10": 0.4}, {"step": 40, "mrrAt10": after}, {"step": 80}],
        },
        "dataset": {"validationSource": "heldOutByDocument", "trainQueries": 80},
    }


@pytest.mark.parametrize("improved", [True, False])
def test_model_improved_condition_and_validation_curve(improved: bool) -> None:
    running = derive_status(make_job(), Observed(admitted=True, attempts=(att(1, "running", T0),)), T0)
    obs = Observed(admitted=True, attempts=(att(1, "succeeded", T0, T0, result=_selection_result(improved)),))
    done = derive_status(make_job(status=running), obs, T0 + timedelta(minutes=1))
    c = {x["type"]: x for x in done["conditions"]}
    assert done["phase"] == "Succeeded"  # a model no better than its base still succeeds ...
    assert c["ModelImproved"]["status"] == ("True" if improved else "False")
    assert c["ModelImproved"]["reason"] == ("Improved" if improved else "NoImprovement")
    assert ("0.4000 -> 0.4000" in c["ModelImproved"]["message"]) is not improved
    m = done["metrics"]
    assert m["bestStep"] == (40 if improved else 0) and m["modelImproved"] is improved
    assert [p["step"] for p in m["validationCurve"]] == [0, 40, 80]
    assert done["dataset"]["validationSource"] == "heldOutByDocument"
    events = events_for_transition(running, done)
    warnings = [e for e in events if e[0] == "Warning"]
    # ... and says so: a Warning Event with the figures
    assert warnings == ([] if improved else [("Warning", "NoImprovement", c["ModelImproved"]["message"])])
    # stable: the same observations give the same status, and no new events
    again = derive_status(make_job(status=done), obs, T0 + timedelta(minutes=2))
    assert status_patch(done, again) is None and events_for_transition(done, again) == []
    # kept once the attempt's result is gone (e.g. the trainer Job was cleaned up)
    later = derive_status(make_job(status=done), Observed(admitted=True), T0 + timedelta(minutes=3))
    assert {x["type"]: x["status"] for x in later["conditions"]}["ModelImproved"] == c["ModelImproved"][
        "status"
    ]


def test_memory_at_risk_when_the_request_is_below_the_measured_peak() -> None:
    def job(memory: str, engine: dict[str, Any]) -> FinetuneJob:
        spec = {
            "engine": engine,
            "dataset": {"train": {"url": "https://example.com/train.json"}},
            "output": {"storageUri": "pvc://models/out"},
            "placement": {"resources": {"memory": memory}},
        }
        body = {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": spec,
        }
        return parse_job(body)

    st = {"sentenceTransformers": {"model": "sentence-transformers/all-MiniLM-L6-v2", "batchSize": 16}}
    low = derive_status(job("2Gi", st), Observed(admitted=True), T0)
    risk = {c["type"]: c for c in low["conditions"]}["MemoryAtRisk"]
    assert risk["status"] == "True" and risk["reason"] == "BelowMeasuredPeak"
    assert "2Gi" in risk["message"] and "GiB peak" in risk["message"]
    assert ("Warning", "BelowMeasuredPeak", risk["message"]) in events_for_transition(None, low)
    for enough in (job("8Gi", st), job("2Gi", {"adapter": {}})):  # enough memory; a lighter engine
        assert "MemoryAtRisk" not in conds(derive_status(enough, Observed(admitted=True), T0))
    short = {"sentenceTransformers": {**st["sentenceTransformers"], "maxSeqLength": 128}}
    assert "MemoryAtRisk" not in conds(derive_status(job("2Gi", short), Observed(admitted=True), T0))
