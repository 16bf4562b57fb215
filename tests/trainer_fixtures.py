"""Shared helpers of the trainer tests: a tiny 2-layer truncation of all-MiniLM-L6-v2, sample data."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "examples" / "data" / "train.json"
VAL = REPO / "examples" / "data" / "val.json"
# a trainer subprocess's environment in the tests: one thread, offline
TRAINER_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def build_tiny_model(target: Path, layers: int = 2) -> Path:
    """Save a `layers`-layer truncation of the bundled all-MiniLM-L6-v2 to target."""
    import torch
    from sentence_transformers import SentenceTransformer

    from finetune_trainer.models import resolve_model

    torch.set_num_threads(1)
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    bert = model[0].auto_model
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    model.max_seq_length = 64
    model.save(str(target))
    return target


def small_dataset(path: Path, source: Path, n_queries: int) -> Path:
    """The first n queries of a sample file (with their docs plus the rest of the corpus)."""
    import json

    raw = json.loads(source.read_text())
    qids = sorted(raw["queries"])[:n_queries]
    docs = {d for q in qids for d in raw["relevant_docs"][q]}
    extra = sorted(set(raw["corpus"]) - docs)[:n_queries]
    keep = docs | set(extra)
    out = {
        "queries": {q: raw["queries"][q] for q in qids},
        "corpus": {d: t for d, t in raw["corpus"].items() if d in keep},
        "relevant_docs": {q: raw["relevant_docs"][q] for q in qids},
        "mode": "text",
    }
    path.write_text(json.dumps(out))
    return path
