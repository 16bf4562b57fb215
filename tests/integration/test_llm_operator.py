"""The llm engine with the real kopf operator against the emulated API server: the API server refuses 4-bit on
a CPU-only job (CEL), a TrainingQuota counts llm GPUs like any in-cluster job's, the trainer pod mounts the model
claim, and the trainer's result lands in status.model / status.metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration.operator_support import (
    GPU,
    NS,
    data_config_map,
    register_quota_admission,
    status_of,
    wait_phase,
    wait_pod,
)

from finetune_operator.local.semantics import ApiError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _quota_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    register_quota_admission(monkeypatch)


def llm_job(name: str, gpus: int = 2, **engine: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "engine": {"llm": {"baseModel": "pvc://models/qwen2.5-0.5b-instruct", **engine}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://finetune-output/llm"},
            "placement": {"resources": {"gpu": {"count": gpus, "resourceName": GPU}, "cpu": "1"}},
        },
    }


def llm_result(name: str) -> str:
    return json.dumps(
        {
            "status": "succeeded",
            "model": {
                "storageUri": f"pvc://finetune-output/llm/{NS}/{name}/model",
                "format": "peft-lora",
                "baseModel": "pvc://models/qwen2.5-0.5b-instruct",
            },
            "metrics": {
                "before": {"loss": 2.31, "perplexity": 10.07, "examples": 40},
                "after": {"loss": 1.52, "perplexity": 4.57, "examples": 40},
            },
            "trainLoss": 1.4,
            "dataset": {"trainQueries": 160, "validationQueries": 40},
        }
    )


async def test_4bit_on_a_cpu_only_job_is_refused_by_the_api_server(cluster: Any) -> None:
    with pytest.raises(ApiError) as info:
        await cluster.create(llm_job("cpu-4bit", gpus=0, quantization="4bit"))
    assert info.value.code == 422 and "quantization 4bit needs a GPU" in info.value.message


async def test_llm_gpus_count_against_the_quota(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory()
    await data_config_map(cluster)
    await cluster.create(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "TrainingQuota",
            "metadata": {"name": "gpus"},
            "spec": {"limits": {"gpus": [{"resourceName": GPU, "count": 2}]}},
        }
    )
    await cluster.create(llm_job("first"))
    pod = await wait_pod(cluster, 1, "first")
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"][GPU] == "2"
    assert any(m["mountPath"] == "/mnt/pvc/models" and m.get("readOnly") for m in container["volumeMounts"])
    await cluster.create(llm_job("second"))
    await wait_phase(cluster, "Queued", "second")
    assert "gpus" in str(status_of(cluster, "second").get("message"))  # the quota that holds it back

    await kubelet.succeed(pod, message=llm_result("first"))
    status = await wait_phase(cluster, "Succeeded", "first")
    assert status["engine"] == "llm"
    assert status["model"]["format"] == "peft-lora"
    assert status["model"]["storageUri"] == f"pvc://finetune-output/llm/{NS}/first/model"
    assert status["metrics"]["after"]["loss"] == 1.52 and status["metrics"]["before"]["perplexity"] == 10.07
    # the GPUs are free again: the queued job is admitted and gets its pod
    await wait_pod(cluster, 1, "second")
    await eventually(lambda: status_of(cluster, "second").get("phase") in ("Pending", "Running"), timeout=30)
