"""spec.engine.llm: defaults, what both layers accept, the trainer config and mounts of a pvc:// base model,
the status format, and quota GPUs counted as for any in-cluster job."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.crdcheck import validate

from finetune_operator.api import parse_job
from finetune_operator.api.engine_llm import DEFAULT_LEARNING_RATE
from finetune_operator.builders import build_trainer_config, build_trainer_job
from finetune_operator.builders.mounts import plan_mounts
from finetune_operator.config import Settings
from finetune_operator.quota.model import job_view
from finetune_operator.status.sections import derive_model

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
JOB_CRD = yaml.safe_load((ROOT / "crds" / "finetune.dev_finetunejobs.yaml").read_text())


def body(**engine: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "chat", "namespace": "team-a", "uid": "u-1", "generation": 1},
        "spec": {
            "engine": {"llm": {"baseModel": "pvc://models/qwen2.5-0.5b-instruct", **engine}},
            "dataset": {"train": {"configMap": {"name": "chat", "key": "train.jsonl"}}},
            "output": {"storageUri": "pvc://finetune-output/llm"},
            "placement": {"resources": {"gpu": {"count": 2}}},
        },
    }


def test_defaults() -> None:
    llm = parse_job(body()).spec.engine.llm
    assert llm is not None
    assert (llm.method, llm.quantization, llm.precision, llm.merge) == ("sft", "none", "auto", False)
    assert (llm.lora.rank, llm.lora.alpha, llm.lora.target_modules) == (16, 32, None)
    assert llm.learning_rate == DEFAULT_LEARNING_RATE
    assert parse_job(body()).spec.dataset_format == "chat"
    assert parse_job(body(method="dpo")).spec.dataset_format == "preference"


@pytest.mark.parametrize(
    "engine",
    [
        {"quantization": "4bit", "precision": "bf16", "gradientCheckpointing": True},
        {"method": "dpo", "beta": 0.2},
        {"lora": {"rank": 8, "alpha": 16, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]}},
        {"packing": True, "maxSeqLength": 4096, "epochs": 1, "batchSize": 8, "gradientAccumulation": 4},
    ],
)
def test_valid_specs_pass_both_layers(engine: dict[str, Any]) -> None:
    job = body(**engine)
    if engine.get("method") == "dpo":
        job["spec"]["dataset"]["format"] = "preference"
    assert validate(job, JOB_CRD) == []
    parse_job(job)


def test_4bit_without_placement_uses_the_default_gpu() -> None:
    job = body(quantization="4bit")
    del job["spec"]["placement"]
    assert validate(job, JOB_CRD) == []
    assert parse_job(job).spec.placement.resources.gpu.count == 1


def test_examples_are_valid() -> None:
    for path in ("examples/llm/finetunejob.yaml", "examples/llm/dpo/finetunejob.yaml"):
        job = yaml.safe_load((ROOT / path).read_text())
        assert validate(job, JOB_CRD) == [], path
        assert parse_job(job).spec.engine.llm is not None


def test_trainer_config_and_pod_mount_the_model_claim() -> None:
    job = parse_job(body())
    cfg = build_trainer_config(job, Settings(), attempt=1)
    assert cfg.spec.engine.llm is not None
    assert cfg.spec.engine.llm.base_model == "/mnt/pvc/models/qwen2.5-0.5b-instruct"
    assert "models" in plan_mounts(job.spec).claims
    pod = build_trainer_job(job, Settings(), attempt=1)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/pvc/models"]["readOnly"] is True
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_status_model_format() -> None:
    job = parse_job(body())
    result = {"model": {"storageUri": "pvc://finetune-output/llm/team-a/chat/model", "format": "peft-lora"}}
    model = derive_model(job, result, succeeded=True)
    assert model is not None and model.format == "peft-lora"
    assert model.base_model == "pvc://models/qwen2.5-0.5b-instruct"
    fallback = derive_model(job, None, succeeded=True)
    assert fallback is not None and fallback.format == "peft-lora"


def test_quota_counts_the_jobs_gpus() -> None:
    view = job_view(parse_job(body()))
    assert view.gpus == {"nvidia.com/gpu": 2} and view.hosted_provider is None
    cpu = copy.deepcopy(body())
    cpu["spec"]["placement"]["resources"]["gpu"]["count"] = 0
    assert job_view(parse_job(cpu)).gpus == {}
