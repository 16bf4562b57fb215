"""Validation held out of the training data by document: every query of a held-out document goes to
validation, so no query about a held-out document is trained on (a split by query would leak documents)."""

from __future__ import annotations

import random

from .data import EmbeddingQADataset, split_dataset


def _components(ds: EmbeddingQADataset) -> list[tuple[list[str], set[str]]]:
    """Groups of (queries, documents) joined by relevance (a query with two documents joins them)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q in ds.queries:
        docs = ds.relevant_docs.get(q, [])
        for d in docs[1:]:
            parent[find(d)] = find(docs[0])
    groups: dict[str, tuple[list[str], set[str]]] = {}
    for q in ds.queries:
        docs = ds.relevant_docs.get(q, [])
        if not docs:
            continue
        qs, ds_ = groups.setdefault(find(docs[0]), ([], set()))
        qs.append(q)
        ds_.update(docs)
    return list(groups.values())


def split_by_document(
    ds: EmbeddingQADataset, validation_fraction: float, seed: int = 42
) -> tuple[EmbeddingQADataset, EmbeddingQADataset, str]:
    """(train, validation, how): about `validation_fraction` of the queries, taken whole documents at a time.
    Validation retrieves over the whole corpus; the training corpus leaves the held-out documents out.
    `how` is "document", or "query" when the data has fewer than two document groups (then the split is
    by query, as split_dataset does)."""
    groups = sorted(_components(ds), key=lambda g: sorted(g[0])[0])
    if len(groups) < 2:
        train, val = split_dataset(ds, validation_fraction, seed)
        return train, val, "query"
    random.Random(seed).shuffle(groups)
    target = max(1, round(len(ds.queries) * validation_fraction))
    val_q: list[str] = []
    held: set[str] = set()
    for qs, docs in groups[:-1]:  # at least one group stays for training
        if len(val_q) >= target:
            break
        val_q += qs
        held |= docs
    keep_val = set(val_q)
    train = EmbeddingQADataset(
        queries={q: t for q, t in ds.queries.items() if q not in keep_val},
        corpus={d: t for d, t in ds.corpus.items() if d not in held},
        relevant_docs={q: list(d) for q, d in ds.relevant_docs.items() if q not in keep_val},
        mode=ds.mode,
    )
    val = EmbeddingQADataset(
        queries={q: t for q, t in ds.queries.items() if q in keep_val},
        corpus=dict(ds.corpus),
        relevant_docs={q: list(d) for q, d in ds.relevant_docs.items() if q in keep_val},
        mode=ds.mode,
    )
    return train, val, "document"
