"""Validation-driven selection end to end (trainer, in process, tiny model): a training run that can only
hurt publishes the base model with modelImproved=False; a held-out split is by document."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from tests.trainer_fixtures import TRAIN, VAL, build_tiny_model, small_dataset

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _shuffled_labels(src: Path, dst: Path, seed: int = 0) -> Path:
    """The same queries and corpus, each query pointed at a random other document: training can only hurt."""
    raw = json.loads(src.read_text())
    docs = sorted(raw["corpus"])
    rng = random.Random(seed)
    rel = {}
    for q, true in raw["relevant_docs"].items():
        rel[q] = [rng.choice([d for d in docs if d not in true])]
    dst.write_text(json.dumps({**raw, "relevant_docs": rel}))
    return dst


def _run(tmp: Path, engine: dict[str, Any], train: Path, val: Path | None) -> dict[str, Any]:
    import torch

    from finetune_operator.api.finetunejob import FinetuneJobSpec
    from finetune_operator.api.trainerconfig import JobRef, TrainerConfig
    from finetune_trainer.steps import run

    torch.set_num_threads(1)
    spec = FinetuneJobSpec.model_validate(
        {
            "engine": engine,
            "seed": 1,
            "output": {"storageUri": "pvc://local/selection"},
            "dataset": {"train": {"pvc": {"claimName": "local", "path": "train.json"}}},
        }
    )
    out = tmp / "out"
    cfg = TrainerConfig(
        job=JobRef(namespace="default", name="selection"),
        spec=spec,
        train=str(train),
        validation=str(val) if val is not None else None,
        output_dir=str(out),
        output_uri=str(out),
        result_path=None,
    )
    assert run(cfg) == 0
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    return result


def test_adapter_that_cannot_help_publishes_the_base_model(tiny: Path, tmp_path: Path) -> None:
    train = _shuffled_labels(small_dataset(tmp_path / "t.json", TRAIN, 64), tmp_path / "shuffled.json")
    val = small_dataset(tmp_path / "v.json", VAL, 32)
    engine = {"adapter": {"baseModel": str(tiny), "epochs": 4, "batchSize": 16, "learningRate": 0.5}}
    result = _run(tmp_path, engine, train, val)
    m = result["metrics"]
    assert result["status"] == "succeeded"
    assert m["modelImproved"] is False and m["bestStep"] == 0, m
    assert "no evaluation beat the base model" in m["improvementMessage"]
    assert m["after"]["mrrAt10"] == pytest.approx(m["before"]["mrrAt10"])
    # the curve shows the damage training did; the published adapter is the identity (the base model)
    assert m["validationCurve"][0]["step"] == 0
    assert min(p["mrrAt10"] for p in m["validationCurve"][1:]) < m["before"]["mrrAt10"]
    from sentence_transformers import SentenceTransformer

    pub = SentenceTransformer(str(tmp_path / "out" / "model"), device="cpu")
    base = SentenceTransformer(str(tiny), device="cpu")
    texts = ["how do I open a file", "parse command line arguments"]
    assert abs(pub.encode_query(texts) - base.encode(texts)).max() < 1e-3
    assert (tmp_path / "out" / "training.png").is_file()


def test_adapter_holds_out_by_document_without_a_validation_set(tiny: Path, tmp_path: Path) -> None:
    train = small_dataset(tmp_path / "t.json", TRAIN, 64)
    engine = {"adapter": {"baseModel": str(tiny), "epochs": 2, "batchSize": 16}}
    result = _run(tmp_path, engine, train, None)
    assert result["dataset"]["validationSource"] == "heldOutByDocument"
    assert result["metrics"]["modelImproved"] is (
        result["metrics"]["after"]["mrrAt10"] > result["metrics"]["before"]["mrrAt10"]
    )
    assert (
        result["frozenPass"]["precision"] in ("fp32", "bf16") and result["frozenPass"]["textsPerSecond"] > 0
    )


def test_sentence_transformers_that_cannot_help_publishes_the_base_model(tiny: Path, tmp_path: Path) -> None:
    train = _shuffled_labels(small_dataset(tmp_path / "t.json", TRAIN, 64), tmp_path / "shuffled.json")
    val = small_dataset(tmp_path / "v.json", VAL, 32)
    engine = {
        "sentenceTransformers": {
            "model": str(tiny),
            "epochs": 1,
            "batchSize": 16,
            "learningRate": 1e-3,
            "evaluation": {"steps": 2},
        }
    }
    result = _run(tmp_path, engine, train, val)
    m = result["metrics"]
    assert m["modelImproved"] is False and m["bestStep"] == 0, m
    assert [p["step"] for p in m["validationCurve"]] == [0, 2, 4]
    assert m["after"]["mrrAt10"] == pytest.approx(m["before"]["mrrAt10"], abs=1e-6)
