"""Trainer config and result contracts with the operator: FINETUNE_ATTEMPT / FINETUNE_PATH_MAP, pvc:// locations
as the builders mount them, and the result JSON read by the operator's status derivation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from finetune_operator.api import parse_job
from finetune_operator.api.finetunejob import FinetuneJob
from finetune_operator.api.trainerconfig import PVC_MOUNT, TrainerConfig
from finetune_operator.backends.base import Observation
from finetune_operator.backends.incluster import observe_pods
from finetune_operator.builders.job import build_trainer_job
from finetune_operator.builders.mounts import local_model_path
from finetune_operator.builders.trainerconfig import build_trainer_config
from finetune_operator.config import Settings
from finetune_operator.status import AttemptObservation, Observed, derive_status
from finetune_operator.status.sections import derive_checkpoints
from finetune_trainer.context import TrainOutcome
from finetune_trainer.data import EmbeddingQADataset
from finetune_trainer.generate import GenerationResult
from finetune_trainer.locations import (
    ConfigError,
    apply_env,
    load_config,
    map_path,
    parse_path_map,
    resolve_location,
    unmap_path,
    user_facing,
)
from finetune_trainer.metrics import retrieval_metrics
from finetune_trainer.output import write_result
from finetune_trainer.result import build_result, dataset_result
from finetune_trainer.steps import plan_steps

pytestmark = pytest.mark.unit
torch.set_num_threads(1)
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _job(spec: dict[str, Any]) -> FinetuneJob:
    return parse_job(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": "demo", "namespace": "team-a", "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
    )


ADAPTER_SPEC: dict[str, Any] = {
    "engine": {
        "adapter": {
            "baseModel": "pvc://models/base/minilm/",
            "continueFrom": "pvc://finetune-models/runs/team-a/earlier/model/adapter",
        }
    },
    "dataset": {
        "train": {"pvc": {"claimName": "qa", "path": "sets/train.json"}},
        "validation": {"configMap": {"name": "qa-data", "key": "val.json"}},
    },
    "output": {"storageUri": "pvc://finetune-models/runs"},
}


# ---------------------------------------------------------------------------- environment


def test_path_map_parse_map_and_unmap() -> None:
    m = parse_path_map(" /mnt/pvc=/tmp/x/pvc, /output=/tmp/x/out/ ,/data=/tmp/x/data")
    assert m == {"/mnt/pvc": "/tmp/x/pvc", "/output": "/tmp/x/out", "/data": "/tmp/x/data"}
    assert map_path("/mnt/pvc/claim/a.json", m) == "/tmp/x/pvc/claim/a.json"
    assert map_path("/output", m) == "/tmp/x/out"
    assert map_path("/outputs/x", m) == "/outputs/x"  # whole path components only
    assert map_path("s3://b/k", m) == "s3://b/k"
    assert unmap_path("/tmp/x/pvc/claim/a.json", m) == "/mnt/pvc/claim/a.json"
    assert parse_path_map("") == {} and parse_path_map(None) == {}
    for bad in ("/a", "relative=/x", "/a="):
        with pytest.raises(ConfigError, match="FINETUNE_PATH_MAP"):
            parse_path_map(bad)


def test_pvc_locations_match_the_builders_mounts() -> None:
    job = _job(ADAPTER_SPEC)
    cfg = build_trainer_config(job, Settings(), attempt=1)
    assert cfg.spec.engine.adapter is not None
    uri = cfg.spec.engine.adapter.continue_from
    assert uri is not None and uri.startswith("pvc://")  # the builder leaves it to the trainer
    local = resolve_location(uri, {})
    assert local == f"{PVC_MOUNT}/finetune-models/runs/team-a/earlier/model/adapter"
    # same rendering as the builder's for models, trailing slash included
    assert resolve_location("pvc://models/base/minilm/", {}) == local_model_path("pvc://models/base/minilm/")
    assert cfg.spec.engine.adapter.base_model == local_model_path("pvc://models/base/minilm/")
    # and the pod mounts that claim where the trainer looks
    pod = build_trainer_job(job, Settings(), 1)["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert f"{PVC_MOUNT}/finetune-models" in mounts and f"{PVC_MOUNT}/models" in mounts
    assert any(local.startswith(m + "/") for m in mounts)
    # user-facing names in the result: back to pvc:// and configmap://
    assert user_facing(cfg.train, {}) == "pvc://qa/sets/train.json"
    assert user_facing(cfg.validation, {}) == "configmap://qa-data/val.json"
    assert user_facing("s3://b/k", {}) == "s3://b/k"


def test_apply_env_attempt_and_path_map(tmp_path: Path) -> None:
    job = _job(ADAPTER_SPEC)
    cfg = build_trainer_config(job, Settings(), attempt=1)
    path = tmp_path / "config.json"
    path.write_text(cfg.model_dump_json(by_alias=True), encoding="utf-8")
    env = {
        "FINETUNE_ATTEMPT": "3",
        "FINETUNE_PATH_MAP": f"/mnt/pvc={tmp_path}/pvc,/output={tmp_path}/out,/data={tmp_path}/data",
        "FINETUNE_TERMINATION_LOG": str(tmp_path / "term"),
    }
    loaded = load_config(path, env)
    assert loaded.attempt == 3
    assert loaded.train == f"{tmp_path}/pvc/qa/sets/train.json"
    assert loaded.validation == f"{tmp_path}/data/qa-data/val.json"
    assert loaded.output_dir == f"{tmp_path}/out/runs/team-a/demo"
    assert loaded.output_uri == cfg.output_uri == "pvc://finetune-models/runs/team-a/demo"
    assert loaded.result_path == str(tmp_path / "term")
    assert loaded.spec.engine.adapter is not None
    assert loaded.spec.engine.adapter.base_model == f"{tmp_path}/pvc/models/base/minilm"
    cont = loaded.spec.engine.adapter.continue_from
    assert cont is not None and resolve_location(cont, parse_path_map(env["FINETUNE_PATH_MAP"])) == (
        f"{tmp_path}/pvc/finetune-models/runs/team-a/earlier/model/adapter"
    )
    # without the env nothing changes; a bad attempt names the variable
    assert apply_env(cfg, {}) == cfg
    for bad in ("0", "x", "-2"):
        with pytest.raises(ConfigError, match="FINETUNE_ATTEMPT"):
            apply_env(cfg, {"FINETUNE_ATTEMPT": bad})


def test_plan_steps_with_generation() -> None:
    gen = {
        "documents": [{"url": "https://example.com/a.txt"}],
        "llm": {"baseUrl": "http://llm:8000/v1", "model": "m"},
    }
    spec = {**ADAPTER_SPEC, "dataset": {"generate": gen}}
    assert plan_steps(build_trainer_config(_job(ADAPTER_SPEC), Settings(), 1))[0] == "fetch data"
    steps = plan_steps(build_trainer_config(_job(spec), Settings(), 1))
    assert steps[0] == "generate dataset" and steps[-1] == "write result" and "train" in steps
    only = {**spec, "dataset": {"generate": {**gen, "generateOnly": True}}}
    assert plan_steps(build_trainer_config(_job(only), Settings(), 1)) == ("generate dataset", "write result")


# ---------------------------------------------------------------------------- result -> status


class _Engine:
    model_format = "adapter"
    base_model = f"{PVC_MOUNT}/models/base/minilm"


def _ds(n: int, prefix: str) -> EmbeddingQADataset:
    return EmbeddingQADataset(
        queries={f"{prefix}q{i}": f"question {i}?" for i in range(n)},
        corpus={f"d{i}": f"doc {i}" for i in range(n)},
        relevant_docs={f"{prefix}q{i}": [f"d{i}"] for i in range(n)},
    )


def _result(cfg: TrainerConfig, generated: GenerationResult | None = None) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    docs = torch.randn(6, 8, generator=gen)
    before = retrieval_metrics(torch.randn(6, 8, generator=gen), docs, [{i} for i in range(6)])
    after = retrieval_metrics(docs + 0.01, docs, [{i} for i in range(6)])
    outcome = TrainOutcome(
        steps=40, total_steps=40, train_loss=0.25, wall_seconds=2.0, samples=320, resumed_from=20
    )
    ckpts = [{"step": s, "uri": f"checkpoints/checkpoint-{s}"} for s in (30, 40)]
    return build_result(cfg, _Engine(), outcome, before, after, ckpts, generated, _ds(8, "t"), _ds(6, "v"))


def _status_from_pod(job: FinetuneJob, message: str) -> dict[str, Any]:
    """The real path: termination message -> in-cluster observation -> derive_status."""
    pod = {
        "metadata": {"name": "demo-1-abc", "creationTimestamp": "2025-01-02T03:00:00Z"},
        "status": {
            "phase": "Succeeded",
            "startTime": "2025-01-02T03:00:00Z",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "message": message,
                            "finishedAt": "2025-01-02T03:04:00Z",
                        }
                    },
                }
            ],
        },
    }
    obs = observe_pods({"status": {"startTime": "2025-01-02T03:00:00Z", "succeeded": 1}}, [pod])
    assert obs.state == "succeeded" and obs.result is not None
    return derive_status(job, Observed(admitted=True, attempts=(AttemptObservation(1, obs),)), NOW)


def test_result_fields_land_in_status(tmp_path: Path) -> None:
    job = _job(ADAPTER_SPEC)
    cfg = build_trainer_config(job, Settings(), attempt=1).model_copy(
        update={"result_path": str(tmp_path / "termination-log"), "output_dir": str(tmp_path / "out")}
    )
    result = _result(cfg)
    write_result(cfg, None, result)
    status = _status_from_pod(job, (tmp_path / "termination-log").read_text())
    assert status["phase"] == "Succeeded"
    metrics = status["metrics"]
    for when in ("before", "after"):
        assert metrics[when] == {
            k: result["metrics"][when][k]
            for k in ("hitRateAt1", "hitRateAtK", "k", "mrrAt10", "ndcgAt10", "queries")
        }
    assert metrics["after"]["mrrAt10"] == 1.0 and metrics["after"]["queries"] == 6
    assert (
        metrics["trainLoss"] == 0.25 and metrics["wallSeconds"] == 2.0 and metrics["samplesPerSecond"] == 160
    )
    assert status["model"] == {
        "storageUri": "pvc://finetune-models/runs/team-a/demo/model",
        "format": "adapter",
        "baseModel": "pvc://models/base/minilm",
        "name": "pvc://finetune-models/runs/team-a/demo/model",
    }
    assert status["dataset"] == {
        "trainUri": "pvc://qa/sets/train.json",
        "validationUri": "configmap://qa-data/val.json",
        "trainQueries": 8,
        "validationQueries": 6,
        "corpusSize": 8,
        "validationSource": "given",
    }
    assert metrics["modelImproved"] is (
        result["metrics"]["after"]["mrrAt10"] > result["metrics"]["before"]["mrrAt10"]
    )
    ckpts = derive_checkpoints(None, [result["checkpoints"]])
    assert ckpts is not None and ckpts["latest"].step == 40
    assert ckpts["latest"].uri == "pvc://finetune-models/runs/team-a/demo/checkpoints/checkpoint-40"


def test_generated_dataset_lands_in_status(tmp_path: Path) -> None:
    gen = {
        "documents": [{"url": "https://example.com/a.txt"}],
        "llm": {"baseUrl": "http://llm/v1", "model": "m"},
    }
    job = _job({**ADAPTER_SPEC, "dataset": {"generate": gen}})
    cfg = build_trainer_config(job, Settings(), attempt=1).model_copy(
        update={"result_path": str(tmp_path / "termination-log"), "output_dir": str(tmp_path / "out")}
    )
    generated = GenerationResult(
        train_path=f"{cfg.output_dir}/dataset/train.json",
        validation_path=None,
        report={"train_queries": 8, "validation_queries": 0, "corpus": 8, "requests": 5, "total_tokens": 900},
    )
    result = _result(cfg, generated)
    assert result["generation"]["requests"] == 5 and result["generation"]["totalTokens"] == 900
    write_result(cfg, None, result)
    status = _status_from_pod(job, (tmp_path / "termination-log").read_text())
    base = "pvc://finetune-models/runs/team-a/demo"
    assert status["dataset"]["trainUri"] == f"{base}/dataset/train.json"
    assert "validationUri" not in status["dataset"]  # split from the generated train set
    # generateOnly: counts from the generation report, no model section from the trainer
    only = dataset_result(cfg, generated)
    assert only == {
        "trainUri": f"{base}/dataset/train.json",
        "trainQueries": 8,
        "validationQueries": 0,
        "corpusSize": 8,
    }
    assert json.loads((tmp_path / "termination-log").read_text()) == result


def test_observation_type_is_the_backends() -> None:
    # guards the import path used above: the in-cluster backend returns base.Observation
    assert isinstance(observe_pods(None, []), Observation)
