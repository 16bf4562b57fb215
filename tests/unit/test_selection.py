"""Model selection (best step, patience, curve thinning) and the hold-out split by document."""

from __future__ import annotations

from finetune_trainer.data import EmbeddingQADataset
from finetune_trainer.holdout import split_by_document
from finetune_trainer.metrics import Selection, thin_curve


def test_selection_keeps_step_zero_when_nothing_beats_it_and_stops_after_patience() -> None:
    sel = Selection("mrrAt10", patience=2)
    assert sel.record(0, {"mrrAt10": 0.8})
    assert not sel.record(10, {"mrrAt10": 0.79}) and not sel.should_stop
    assert not sel.record(20, {"mrrAt10": 0.8}) and sel.should_stop  # equal is not better
    s = sel.summary(stopped_early=True)
    assert (
        s["bestStep"] == 0 and s["stoppedEarly"] and [p["step"] for p in s["validationCurve"]] == [0, 10, 20]
    )


def test_selection_min_delta_and_state_round_trip() -> None:
    sel = Selection("ndcgAt10", patience=0, min_delta=0.01)
    sel.record(0, {"ndcgAt10": 0.5})
    assert not sel.record(1, {"ndcgAt10": 0.505})
    assert sel.record(2, {"ndcgAt10": 0.52}) and not sel.should_stop
    other = Selection("ndcgAt10")
    other.load(sel.state())
    assert (other.best_step, other.best_value, other.curve) == (2, 0.52, sel.curve)


def test_thin_curve_keeps_first_last_and_best() -> None:
    curve = [(i, i / 1000) for i in range(200)]
    thin = thin_curve(curve, keep=77, limit=30)
    steps = [s for s, _ in thin]
    assert len(thin) <= 30 and steps[0] == 0 and steps[-1] == 199 and 77 in steps and steps == sorted(steps)


def test_split_by_document_never_trains_on_a_held_out_document() -> None:
    queries = {f"q{i}": f"question {i}" for i in range(40)}
    corpus = {f"d{i}": f"doc {i}" for i in range(20)}
    rel = {f"q{i}": [f"d{i // 2}"] for i in range(40)}  # two queries per document
    rel["q0"] = ["d0", "d19"]  # joins d0 and d19 into one group
    ds = EmbeddingQADataset(queries=queries, corpus=corpus, relevant_docs=rel)
    train, val, how = split_by_document(ds, 0.25, seed=3)
    assert how == "document"
    val_docs = {d for q in val.queries for d in val.relevant_docs[q]}
    train_docs = {d for q in train.queries for d in train.relevant_docs[q]}
    assert not val_docs & train_docs
    assert not val_docs & set(train.corpus) and set(val.corpus) == set(corpus)
    assert set(train.queries) | set(val.queries) == set(queries) and 8 <= len(val.queries) <= 14


def test_split_by_document_falls_back_to_queries_for_one_group() -> None:
    ds = EmbeddingQADataset(
        queries={f"q{i}": "x" for i in range(10)},
        corpus={"d": "doc"},
        relevant_docs={f"q{i}": ["d"] for i in range(10)},
    )
    train, val, how = split_by_document(ds, 0.2)
    assert how == "query" and len(val.queries) == 2 and len(train.queries) == 8
