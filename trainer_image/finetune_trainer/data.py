"""EmbeddingQA datasets: the reference's `EmbeddingQAFinetuneDataset` JSON, read and written with fsspec.

The format is `{"queries": {id: text}, "corpus": {id: text}, "relevant_docs": {query_id: [doc_id, ...]},
"mode": "text"}`. Locations are local paths, http(s):// URLs or s3:// URIs.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pydantic import BaseModel, Field

from finetune_operator.api.trainerconfig import S3Access

_MAX_IDS_IN_MESSAGE = 10


class DatasetError(ValueError):
    """An invalid dataset; `offending_ids` names the ids at fault."""

    def __init__(self, message: str, offending_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offending_ids = list(offending_ids or [])


class EmbeddingQADataset(BaseModel):
    """Queries, a corpus and which corpus docs answer each query."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"

    def pairs(self, use_all_docs: bool = False) -> list[tuple[str, str]]:
        """(query_id, doc_id) training pairs: the first relevant doc per query, or all of them."""
        out: list[tuple[str, str]] = []
        for qid in self.queries:
            docs = self.relevant_docs.get(qid, [])
            for did in docs if use_all_docs else docs[:1]:
                out.append((qid, did))
        return out


class DatasetReport(BaseModel):
    """Sizes of a valid dataset."""

    queries: int = Field(description="Number of queries.")
    corpus: int = Field(description="Number of corpus documents.")
    pairs: int = Field(description="Number of (query, relevant doc) pairs.")
    mode: str = "text"


def s3_storage_options(s3: S3Access | None) -> dict[str, Any]:
    """fsspec/s3fs options from the config's S3 settings (credentials come from the environment)."""
    if s3 is None:
        return {}
    client_kwargs: dict[str, Any] = {}
    if s3.endpoint_url:
        client_kwargs["endpoint_url"] = s3.endpoint_url
    if s3.region:
        client_kwargs["region_name"] = s3.region
    return {"client_kwargs": client_kwargs} if client_kwargs else {}


def storage_options(location: str, s3: S3Access | None) -> dict[str, Any]:
    """fsspec options for one location: the S3 settings for s3:// URIs, none otherwise."""
    return s3_storage_options(s3) if location.startswith("s3://") else {}


def _ids(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_IDS_IN_MESSAGE])
    more = len(ids) - _MAX_IDS_IN_MESSAGE
    return shown + (f" (and {more} more)" if more > 0 else "")


def parse_dataset(raw: Any, source: str = "dataset") -> EmbeddingQADataset:
    """Build a dataset from decoded JSON, with errors naming the field."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{source}: expected a JSON object with queries, corpus and relevant_docs")
    missing = [k for k in ("queries", "corpus", "relevant_docs") if k not in raw]
    if missing:
        raise DatasetError(f"{source}: missing field(s) {', '.join(missing)}")
    for key in ("queries", "corpus"):
        value = raw[key]
        if not isinstance(value, dict):
            raise DatasetError(f"{source}: field {key} must be an object of id -> text")
        bad = [str(k) for k, v in value.items() if not isinstance(v, str)]
        if bad:
            raise DatasetError(f"{source}: {key} entries must be strings: {_ids(bad)}", bad)
    rel = raw["relevant_docs"]
    if not isinstance(rel, dict):
        raise DatasetError(f"{source}: field relevant_docs must be an object of query id -> [doc ids]")
    bad = [
        str(k) for k, v in rel.items() if not isinstance(v, list) or not all(isinstance(d, str) for d in v)
    ]
    if bad:
        raise DatasetError(f"{source}: relevant_docs entries must be lists of doc ids: {_ids(bad)}", bad)
    mode = raw.get("mode", "text")
    if mode is None:
        mode = "text"
    if not isinstance(mode, str):
        raise DatasetError(f"{source}: field mode must be a string")
    return EmbeddingQADataset(queries=raw["queries"], corpus=raw["corpus"], relevant_docs=rel, mode=mode)


def load_dataset(location: str, s3: S3Access | None = None) -> EmbeddingQADataset:
    """Read a dataset from a local path, an http(s):// URL or an s3:// URI."""
    import fsspec

    try:
        with fsspec.open(location, "r", encoding="utf-8", **storage_options(location, s3)) as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {location}: not found") from exc
    except OSError as exc:
        raise DatasetError(f"dataset {location}: cannot be read: {exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"dataset {location}: invalid JSON: {exc}") from exc
    return parse_dataset(raw, source=f"dataset {location}")


def save_dataset(ds: EmbeddingQADataset, location: str, s3: S3Access | None = None) -> None:
    """Write a dataset as JSON to a local path or an s3:// URI (parent directories are created)."""
    import fsspec

    opts = storage_options(location, s3)
    fs, path = fsspec.core.url_to_fs(location, **opts)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as fh:
        json.dump(ds.model_dump(mode="json"), fh, ensure_ascii=False)


def validate_dataset(ds: EmbeddingQADataset, name: str = "dataset") -> DatasetReport:
    """Check the dataset's consistency; raise DatasetError naming the first offending ids."""
    if not ds.queries:
        raise DatasetError(f"{name}: queries is empty")
    if not ds.corpus:
        raise DatasetError(f"{name}: corpus is empty")
    empty_q = [q for q, t in ds.queries.items() if not t.strip()]
    if empty_q:
        raise DatasetError(f"{name}: empty query text for query id(s) {_ids(empty_q)}", empty_q)
    empty_d = [d for d, t in ds.corpus.items() if not t.strip()]
    if empty_d:
        raise DatasetError(f"{name}: empty corpus text for doc id(s) {_ids(empty_d)}", empty_d)
    unknown_q = [q for q in ds.relevant_docs if q not in ds.queries]
    if unknown_q:
        raise DatasetError(f"{name}: relevant_docs names unknown query id(s) {_ids(unknown_q)}", unknown_q)
    missing_docs = sorted({d for docs in ds.relevant_docs.values() for d in docs if d not in ds.corpus})
    if missing_docs:
        raise DatasetError(
            f"{name}: relevant_docs names doc id(s) not in the corpus: {_ids(missing_docs)}", missing_docs
        )
    no_rel = [q for q in ds.queries if not ds.relevant_docs.get(q)]
    if no_rel:
        raise DatasetError(f"{name}: query id(s) without relevant docs: {_ids(no_rel)}", no_rel)
    pairs = sum(len(ds.relevant_docs[q]) for q in ds.queries)
    return DatasetReport(queries=len(ds.queries), corpus=len(ds.corpus), pairs=pairs, mode=ds.mode)


def split_dataset(
    ds: EmbeddingQADataset, validation_fraction: float, seed: int = 42
) -> tuple[EmbeddingQADataset, EmbeddingQADataset]:
    """Split by query, deterministically; both halves share the whole corpus."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    ids = sorted(ds.queries)
    if len(ids) < 2:
        raise DatasetError("cannot split a dataset with fewer than 2 queries")
    random.Random(seed).shuffle(ids)
    n_val = min(len(ids) - 1, max(1, round(len(ids) * validation_fraction)))
    val_ids, train_ids = set(ids[:n_val]), set(ids[n_val:])

    def subset(keep: set[str]) -> EmbeddingQADataset:
        return EmbeddingQADataset(
            queries={q: t for q, t in ds.queries.items() if q in keep},
            corpus=dict(ds.corpus),
            relevant_docs={q: list(d) for q, d in ds.relevant_docs.items() if q in keep},
            mode=ds.mode,
        )

    return subset(train_ids), subset(val_ids)
