"""observe_pods on a multi-pod (Indexed) attempt: every index must succeed, rank 0's result message wins,
any failed pod ends the attempt, and an elastic Job's replaced (disrupted) pods do not."""

from __future__ import annotations

import json
from typing import Any

from finetune_operator.backends.incluster import observe_pods

RESULT = json.dumps({"status": "succeeded", "trainLoss": 1.0})


def _job(completions: int = 2, ignore: bool = False) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"action": "Ignore" if ignore else "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}
    ]
    return {
        "metadata": {"name": "j-a1"},
        "spec": {
            "completions": completions,
            "completionMode": "Indexed",
            "podFailurePolicy": {"rules": rules},
        },
        "status": {"startTime": "2026-01-01T00:00:00Z"},
    }


def _pod(index: int, phase: str, code: int | None = None, message: str = "", **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "startTime": "2026-01-01T00:00:01Z", **extra}
    if code is not None:
        term: dict[str, Any] = {"exitCode": code, "finishedAt": "2026-01-01T00:01:00Z"}
        if message:
            term["message"] = message
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    return {
        "metadata": {
            "name": f"j-a1-{index}",
            "creationTimestamp": f"2026-01-01T00:00:0{index}Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": status,
    }


def test_one_succeeded_index_is_not_the_end() -> None:
    obs = observe_pods(_job(), [_pod(0, "Running"), _pod(1, "Succeeded", 0)])
    assert obs.state == "running"


def test_all_indexes_succeeded_gives_rank0s_result() -> None:
    obs = observe_pods(_job(), [_pod(0, "Succeeded", 0, RESULT), _pod(1, "Succeeded", 0)])
    assert obs.state == "succeeded" and obs.result == json.loads(RESULT)
    obs = observe_pods(_job(), [_pod(1, "Succeeded", 0), _pod(0, "Succeeded", 0, RESULT)])
    assert obs.result == json.loads(RESULT)


def test_a_failed_index_fails_the_attempt_even_after_another_succeeded() -> None:
    obs = observe_pods(_job(), [_pod(0, "Succeeded", 0, RESULT), _pod(1, "Failed", 1, "boom")])
    assert obs.state == "failed" and not obs.disruption


def test_interrupted_ranks() -> None:
    obs = observe_pods(_job(), [_pod(0, "Failed", 4), _pod(1, "Failed", 4)])
    assert obs.state == "interrupted"


def test_elastic_disrupted_pod_is_replaced_not_fatal() -> None:
    evicted = _pod(1, "Failed", 137, reason="Evicted", message="node drained")
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True"}]
    assert observe_pods(_job(ignore=True), [_pod(0, "Running"), evicted]).state == "running"
    # without the Ignore rule (static), the same pod ends the attempt as a disruption
    obs = observe_pods(_job(), [_pod(0, "Running"), evicted])
    assert obs.state == "failed" and obs.disruption


def test_pods_by_index_and_status_while_starting() -> None:
    from finetune_operator.api import parse_job
    from finetune_operator.status.distributed import derive_distributed, readiness_note

    ready = _pod(0, "Running", conditions=[{"type": "Ready", "status": "True"}])
    obs = observe_pods(_job(), [_pod(1, "Pending"), ready])
    assert obs.state == "running"
    assert obs.nodes == (
        {"index": 0, "phase": "Running", "ready": True},
        {"index": 1, "phase": "Pending", "ready": False},
    )
    job = parse_job(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": {
                "engine": {"sentenceTransformers": {"model": "m", "batchSize": 8}},
                "dataset": {"train": {"configMap": {"name": "d", "key": "t.json"}}},
                "output": {"storageUri": "s3://bucket/x"},
                "placement": {"nodes": 2, "resources": {"gpu": {"count": 2}}},
            },
        }
    )
    status = derive_distributed(job, obs)
    assert status is not None
    assert (status.world_size, status.nodes, status.processes_per_node, status.nodes_ready) == (4, 2, 2, 1)
    assert [(p.index, p.ready) for p in status.pods or []] == [(0, True), (1, False)]
    assert readiness_note(job, obs) == " (1/2 trainer pods ready)"
    finished = derive_distributed(job, None)
    assert finished is not None and finished.pods == [] and finished.world_size == 4
