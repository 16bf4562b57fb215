"""Unit tests of the trainer: data validation and split, adapter math, checkpoints, metrics, result schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_trainer.adapter import (
    LinearAdapter,
    TwoLayerAdapter,
    load_reference_layout,
    save_reference_layout,
)
from finetune_trainer.checkpoints import latest_valid_checkpoint, rotate_checkpoints
from finetune_trainer.data import (
    DatasetError,
    EmbeddingQADataset,
    load_dataset,
    save_dataset,
    split_dataset,
    validate_dataset,
)
from finetune_trainer.engine_adapter import in_batch_loss
from finetune_trainer.metrics import retrieval_metrics
from finetune_trainer.output import write_result
from finetune_trainer.progress import Reporter, status_patch, to_api_progress

pytestmark = pytest.mark.unit
torch.set_num_threads(1)


def _ds(**kw: object) -> EmbeddingQADataset:
    base: dict[str, object] = {
        "queries": {"q1": "a?", "q2": "b?"},
        "corpus": {"d1": "A", "d2": "B"},
        "relevant_docs": {"q1": ["d1"], "q2": ["d2"]},
    }
    base.update(kw)
    return EmbeddingQADataset.model_validate(base)


def test_validate_names_missing_docs() -> None:
    with pytest.raises(DatasetError) as err:
        validate_dataset(_ds(relevant_docs={"q1": ["d1", "dX"], "q2": ["dY"]}))
    assert err.value.offending_ids == ["dX", "dY"] and "'dX'" in str(err.value)


@pytest.mark.parametrize(
    ("kw", "ids"),
    [
        ({"queries": {"q1": "a?", "q2": " "}}, ["q2"]),
        ({"corpus": {"d1": "", "d2": "B"}}, ["d1"]),
        ({"relevant_docs": {"q1": ["d1"], "q2": ["d2"], "q9": ["d1"]}}, ["q9"]),
        ({"relevant_docs": {"q1": ["d1"]}}, ["q2"]),
    ],
)
def test_validate_offending_ids(kw: dict[str, object], ids: list[str]) -> None:
    with pytest.raises(DatasetError) as err:
        validate_dataset(_ds(**kw))
    assert err.value.offending_ids == ids


def test_validate_lists_first_ten() -> None:
    ds = _ds(relevant_docs={"q1": [f"x{i:02d}" for i in range(15)], "q2": ["d2"]})
    with pytest.raises(DatasetError) as err:
        validate_dataset(ds)
    assert "x09" in err.value.message and "x10" not in err.value.message and "5 more" in err.value.message


def test_load_save_roundtrip_and_bad_json(tmp_path: Path) -> None:
    save_dataset(_ds(), str(tmp_path / "sub" / "d.json"))
    assert load_dataset(str(tmp_path / "sub" / "d.json")) == _ds()
    (tmp_path / "bad.json").write_text('{"queries": {}}')
    with pytest.raises(DatasetError, match="corpus"):
        load_dataset(str(tmp_path / "bad.json"))


def test_split_is_deterministic_and_disjoint() -> None:
    ds = _ds(
        queries={f"q{i}": f"t{i}" for i in range(50)}, relevant_docs={f"q{i}": ["d1"] for i in range(50)}
    )
    tr, va = split_dataset(ds, 0.2, seed=3)
    tr2, va2 = split_dataset(ds, 0.2, seed=3)
    assert tr == tr2 and va == va2 and len(va.queries) == 10
    assert not set(tr.queries) & set(va.queries) and tr.corpus == va.corpus == ds.corpus
    assert split_dataset(ds, 0.2, seed=4)[1] != va


def test_linear_adapter_identity_and_reference_layout(tmp_path: Path) -> None:
    a = LinearAdapter(8, bias=True)
    x = torch.randn(3, 8)
    assert torch.allclose(a(x), x)
    save_reference_layout(a, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "in_features": 8,
        "out_features": 8,
        "bias": True,
    }
    assert set(torch.load(tmp_path / "pytorch_model.bin")) == {"linear.weight", "linear.bias"}
    assert isinstance(load_reference_layout(tmp_path), LinearAdapter)


def test_two_layer_starts_as_identity_and_roundtrips(tmp_path: Path) -> None:
    a = TwoLayerAdapter(8, 16, 8, bias=True, activation_fn_str="gelu", add_residual=True)
    x = torch.randn(3, 8)
    assert torch.allclose(a(x), x)
    with torch.no_grad():
        a.residual_weight.fill_(0.5)
    save_reference_layout(a, tmp_path)
    b = load_reference_layout(tmp_path)
    assert isinstance(b, TwoLayerAdapter) and torch.allclose(a(x), b(x))
    assert json.loads((tmp_path / "config.json").read_text())["hidden_features"] == 16


def test_in_batch_loss_masks_duplicate_docs() -> None:
    q = torch.eye(3)
    d = torch.eye(3)
    low = in_batch_loss(q, d, torch.tensor([0, 1, 2]), 0.05)
    assert low < 1e-3
    # the same doc twice: it must not count as a negative of itself
    dup = in_batch_loss(torch.stack([q[0], q[0]]), torch.stack([d[0], d[0]]), torch.tensor([5, 5]), 0.05)
    assert dup < 1e-3


def test_metrics_match_information_retrieval_evaluator() -> None:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(20, 8, generator=g), torch.randn(30, 8, generator=g)
    relevant = [{i, (i * 7) % 30} for i in range(20)]
    ours = retrieval_metrics(q, d, relevant, k=5)
    ev = InformationRetrievalEvaluator(
        queries={str(i): "x" for i in range(20)},
        corpus={str(j): "y" for j in range(30)},
        relevant_docs={str(i): {str(j) for j in r} for i, r in enumerate(relevant)},
        accuracy_at_k=[1, 5],
        precision_recall_at_k=[5],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
    )
    ref = ev.compute_metrics(_scores(q, d))
    assert ours["hitRateAt1"] == pytest.approx(ref["accuracy@k"][1])
    assert ours["hitRateAtK"] == pytest.approx(ref["accuracy@k"][5])
    assert ours["mrrAt10"] == pytest.approx(ref["mrr@k"][10])
    assert ours["ndcgAt10"] == pytest.approx(ref["ndcg@k"][10])


def _scores(q: torch.Tensor, d: torch.Tensor) -> list[list[dict[str, object]]]:
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T
    return [[{"corpus_id": str(j), "score": float(s)} for j, s in enumerate(row)] for row in sims]


def _ckpt(root: Path, step: int, ok: bool) -> None:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    torch.save({"step": step}, path / "state.pt")
    if not ok:
        (path / "state.pt").write_bytes((path / "state.pt").read_bytes()[:40])


def test_checkpoint_rotation_and_corrupt_skip(tmp_path: Path) -> None:
    for s in (10, 20, 30, 40):
        _ckpt(tmp_path, s, ok=s != 40)
    (tmp_path / "checkpoint-50").mkdir()  # partial: no state file
    assert latest_valid_checkpoint(tmp_path, ("state.pt",)) == tmp_path / "checkpoint-30"
    assert not (tmp_path / "checkpoint-40").exists() and not (tmp_path / "checkpoint-50").exists()
    rotate_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20", "checkpoint-30"]


def test_progress_throttle_and_patch() -> None:
    seen: list[dict[str, object]] = []

    class Sink:
        def emit(self, progress: dict[str, object], checkpoints: object) -> None:
            seen.append(progress)

        def close(self) -> None:
            return None

    r = Reporter([Sink()], interval_seconds=60)
    assert r.report({"step": 1, "total_steps": 4})
    assert not r.report({"step": 2, "total_steps": 4})
    r.close()
    assert [p["step"] for p in seen] == [1, 2] and seen[1]["percent"] == 50 and "totalSteps" in seen[1]
    patch = status_patch(to_api_progress({"step": 3, "eta_seconds": 1.5}), [{"step": 3, "uri": "u"}])
    assert patch["status"]["checkpoints"]["latest"] == {"step": 3, "uri": "u"}
    assert patch["status"]["progress"]["etaSeconds"] == 1


def test_result_fits_termination_message(tmp_path: Path) -> None:
    from finetune_operator.api.finetunejob import MetricsStatus
    from finetune_operator.api.trainerconfig import TrainerConfig

    cfg = TrainerConfig.model_validate(
        {
            "job": {"namespace": "n", "name": "j"},
            "outputDir": str(tmp_path),
            "outputUri": "s3://b/x",
            "resultPath": str(tmp_path / "term"),
            "spec": {
                "engine": {"adapter": {}},
                "dataset": {"train": {"url": "s3://bucket/t.json"}},
                "output": {"storageUri": "s3://bucket/x"},
            },
        }
    )
    m = {"hitRateAt1": 0.5, "hitRateAtK": 0.7, "k": 5, "mrrAt10": 0.6, "ndcgAt10": 0.65, "queries": 10}
    result = {
        "status": "succeeded",
        "metrics": {"before": m, "after": m},
        "checkpoints": [
            {"step": i, "uri": "s3://b/x/checkpoints/checkpoint-" + "9" * 60} for i in range(100)
        ],
    }
    write_result(cfg, None, result)
    text = (tmp_path / "term").read_text()
    assert len(text.encode()) <= 4096 and json.loads(text)["checkpoints"][-1]["step"] == 99
    MetricsStatus.model_validate(json.loads(text)["metrics"])
