"""Multi-pod and multi-GPU trainer Jobs: the Indexed Job, its headless Service and the torchrun command line
(golden manifests), the API's node/elastic rules and the world-size checks."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from finetune_operator.api import FinetuneJob, parse_job
from finetune_operator.builders import RDZV_PORT, build_service, build_trainer_job, owner_reference
from finetune_operator.config import Settings
from finetune_operator.naming import trainer_service_name

GOLDEN = Path(__file__).parent / "golden"

SPEC: dict[str, Any] = {
    "engine": {"sentenceTransformers": {"model": "BAAI/bge-small-en", "batchSize": 64}},
    "dataset": {"train": {"configMap": {"name": "qa-data", "key": "train.json"}}},
    "output": {"storageUri": "s3://bucket/finetunes"},
    "placement": {"nodes": 2, "resources": {"gpu": {"count": 4}}},
}


def make_job(spec: dict[str, Any], name: str = "dist") -> FinetuneJob:
    return parse_job(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": name, "namespace": "team-a", "uid": "0000-uid-1", "generation": 1},
            "spec": spec,
        }
    )


def _with(**placement: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec["placement"].update(placement)
    return spec


def _shape(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Job that distribution changes (the config hash changes with every API field)."""
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    return {
        "spec": {k: v for k, v in job["spec"].items() if k != "template"},
        "subdomain": pod.get("subdomain"),
        "command": container.get("command"),
        "args": container["args"],
        "env": container["env"],
        "resources": container["resources"],
    }


@pytest.mark.parametrize(
    ("case", "placement"),
    [
        ("distributed_static", {}),
        ("distributed_elastic", {"nodes": 4, "elastic": {"minNodes": 2, "maxNodes": 4}}),
    ],
)
def test_golden_indexed_job_and_service(case: str, placement: dict[str, Any]) -> None:
    job = make_job(_with(**placement))
    got = {"job": _shape(build_trainer_job(job, Settings(), 2)), "service": build_service(job, 2)}
    path = GOLDEN / f"{case}.json"
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; regenerate with UPDATE_GOLDEN=1 if intended"


def test_static_job_is_indexed_with_rank0_endpoint() -> None:
    job = make_job(SPEC)
    tjob = build_trainer_job(job, Settings(termination_grace_period_seconds=120), 2)
    spec = tjob["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimitPerIndex"] == 0 and spec["maxFailedIndexes"] == 0 and "backoffLimit" not in spec
    assert [r["action"] for r in spec["podFailurePolicy"]["rules"]] == ["FailJob"] * 3
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == trainer_service_name("dist", 2) == "dist-a2"
    args = pod["containers"][0]["args"]
    assert "--nnodes=2" in args and "--nproc-per-node=4" in args and "--max-restarts=0" in args
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in args and "--rdzv-backend=c10d" in args
    assert f"--rdzv-endpoint=dist-a2-0.dist-a2:{RDZV_PORT}" in args
    assert "--shutdown-timeout=110" in args
    assert args[-4:] == ["-m", "finetune_trainer", "--config", "/etc/finetune/config.json"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"  # per pod


def test_elastic_job_replaces_disrupted_pods_and_restarts_workers() -> None:
    job = make_job(_with(nodes=4, elastic={"minNodes": 2, "maxNodes": 4}))
    spec = build_trainer_job(job, Settings(), 1)["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert {r["action"] for r in rules[1:]} == {"FailJob"}  # exit 3 and exit 4 still end the attempt
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--nnodes=2:4" in args and "--max-restarts=3" in args  # runPolicy.backoffLimit


def test_service_is_headless_owned_and_selects_the_attempt() -> None:
    job = make_job(SPEC)
    svc = build_service(job, 2)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["metadata"]["ownerReferences"] == [owner_reference(job)]
    pod_labels = build_trainer_job(job, Settings(), 2)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["selector"]["finetune.dev/attempt"] == "2"


def test_service_name_is_a_dns_1035_label() -> None:
    assert trainer_service_name("7up", 1)[0].isalpha()
    assert len(trainer_service_name("x" * 80, 12)) <= 63


def test_single_pod_jobs_keep_their_shape() -> None:
    one = build_trainer_job(make_job(_with(nodes=1, resources={"gpu": {"count": 1}})), Settings(), 1)
    assert one["spec"]["completions"] == 1 and one["spec"]["backoffLimit"] == 0
    assert "completionMode" not in one["spec"] and "subdomain" not in one["spec"]["template"]["spec"]
    container = one["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container and container["args"] == ["--config", "/etc/finetune/config.json"]
    cpu = make_job(_with(nodes=1, resources={"gpu": {"count": 0}}))
    assert "command" not in build_trainer_job(cpu, Settings(), 1)["spec"]["template"]["spec"]["containers"][0]


def test_world_size() -> None:
    assert make_job(SPEC).spec.placement.world_size == 8
    assert make_job(_with(resources={"gpu": {"count": 0}})).spec.placement.world_size == 2


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": 65}, "nodes"),
        ({"nodes": 5, "elastic": {"minNodes": 2, "maxNodes": 4}}, "elastic.minNodes..elastic.maxNodes"),
        ({"elastic": {"minNodes": 3, "maxNodes": 2}}, "minNodes must not exceed maxNodes"),
        ({"resources": {"gpu": {"count": 3}}}, "batchSize 64 is the global batch"),
    ],
)
def test_invalid_distribution_is_rejected(placement: dict[str, Any], message: str) -> None:
    with pytest.raises((ValidationError, ValueError)) as err:
        make_job(_with(**placement))
    assert message in str(err.value)


def test_manifests_validate_against_the_kubernetes_schema() -> None:
    import kubernetes_validate

    job = make_job(_with(nodes=4, elastic={"minNodes": 2, "maxNodes": 4}))
    for obj in (build_trainer_job(job, Settings(), 1), build_service(job, 1)):
        kubernetes_validate.validate(obj, "1.32", strict=True)


def test_kueue_gets_one_suspended_job_for_every_pod() -> None:
    spec = _with()
    spec["runPolicy"] = {"queueName": "gpu-queue"}
    tjob = build_trainer_job(make_job(spec), Settings(kueue_mode=True), 1)
    # one Job (one Kueue Workload, admitted all or nothing): suspended as a whole, both pods in its podset
    assert tjob["spec"]["suspend"] is True and tjob["spec"]["parallelism"] == 2
    assert tjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert tjob["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "4"
