"""generate_dataset: documents -> chunks -> questions from an LLM -> train/validation EmbeddingQA datasets.

The counterpart of the reference's `generate_qa_embedding_pairs`, made resumable (questions are kept per
chunk content hash in `<output>/generation_state.json`, saved every `saveEvery` chunks) and robust
(retries with backoff, a concurrency limit, lenient parsing of the LLM's answers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from finetune_operator.api.finetunejob import GenerateSpec
from finetune_trainer.data import (
    DatasetError,
    EmbeddingQADataset,
    save_dataset,
    split_dataset,
    validate_dataset,
)

from .chunking import chunk_hash, chunk_text
from .documents import load_documents
from .errors import GenerationError
from .llm import QuestionClient, SleepFn
from .parsing import normalize_question, parse_questions
from .state import ChunkResult, GenerationState, load_state, save_state, settings_fingerprint

log = logging.getLogger(__name__)

TRAIN_FILE = "train.json"
VALIDATION_FILE = "val.json"
REPORT_FILE = "generation_report.json"
# Namespace of the deterministic ids (uuid5 of the chunk hash, and of hash:index for queries).
ID_NAMESPACE = uuid.UUID("6f1c3a52-0d5e-4a8b-9a57-5e0b1f4c7d21")
_MAX_WARNINGS = 50

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Chunk:
    hash: str
    text: str
    source: str


@dataclass(frozen=True)
class GenerationResult:
    """Where the generated datasets were written, and the generation report."""

    train_path: str
    validation_path: str | None
    report: dict[str, Any]


def render_prompt(template: str, context: str, num_questions: int) -> str:
    """The prompt for one chunk. Plain replacement, so other braces in a template are left alone."""
    return template.replace("{context_str}", context).replace("{num_questions_per_chunk}", str(num_questions))


def node_id(hash_: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, hash_))


def query_id(hash_: str, index: int) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{hash_}:{index}"))


def make_chunks(docs: list[tuple[str, str]], chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """Chunks of (source, text) documents, in order, identical chunks kept once."""
    seen: set[str] = set()
    out: list[Chunk] = []
    for source, text in docs:
        for piece in chunk_text(text, chunk_size, chunk_overlap):
            h = chunk_hash(piece)
            if h not in seen:
                seen.add(h)
                out.append(Chunk(h, piece, source))
    return out


def build_dataset(chunks: list[Chunk], results: dict[str, ChunkResult]) -> tuple[EmbeddingQADataset, int]:
    """One dataset with every chunk in the corpus; questions repeated across chunks are kept once.

    Returns the dataset and the number of cross-chunk duplicates dropped.
    """
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    seen: set[str] = set()
    dropped = 0
    for chunk in chunks:
        nid = node_id(chunk.hash)
        corpus[nid] = chunk.text
        result = results.get(chunk.hash)
        for i, question in enumerate(result.questions if result else []):
            key = normalize_question(question)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            qid = query_id(chunk.hash, i)
            queries[qid] = question
            relevant[qid] = [nid]
    return EmbeddingQADataset(queries=queries, corpus=corpus, relevant_docs=relevant, mode="text"), dropped


def split_by_chunk(
    ds: EmbeddingQADataset, validation_fraction: float, seed: int
) -> tuple[EmbeddingQADataset, EmbeddingQADataset, str]:
    """Hold out whole chunks (as the reference holds out nodes), so no validation passage is trained on.

    With fewer than two chunks that have questions, the queries are split instead (shared corpus).
    """
    with_questions = sorted({docs[0] for docs in ds.relevant_docs.values()})
    if len(with_questions) < 2:
        train, val = split_dataset(ds, validation_fraction, seed)
        return train, val, "by_query"
    random.Random(seed).shuffle(with_questions)
    n_val = min(len(with_questions) - 1, max(1, round(len(with_questions) * validation_fraction)))
    val_nodes = set(with_questions[:n_val])

    def subset(in_val: bool) -> EmbeddingQADataset:
        qids = [q for q, docs in ds.relevant_docs.items() if (docs[0] in val_nodes) == in_val]
        return EmbeddingQADataset(
            queries={q: ds.queries[q] for q in qids},
            corpus={n: t for n, t in ds.corpus.items() if (n in val_nodes) == in_val},
            relevant_docs={q: list(ds.relevant_docs[q]) for q in qids},
            mode=ds.mode,
        )

    return subset(False), subset(True), "by_chunk"


class _Run:
    """One generation run: workers pulling chunks, results recorded in the state, saved periodically."""

    def __init__(
        self,
        spec: GenerateSpec,
        state: GenerationState,
        output_dir: str,
        storage_options: dict[str, Any] | None,
        warnings: list[str],
        on_progress: ProgressFn | None,
        total: int,
    ) -> None:
        self.spec = spec
        self.state = state
        self.output_dir = output_dir
        self.storage_options = storage_options
        self.warnings = warnings
        self.on_progress = on_progress
        self.total = total
        self.done_this_run = 0
        self.short = 0
        self.unsaved = 0

    def save(self) -> None:
        save_state(self.output_dir, self.state, self.storage_options)
        self.unsaved = 0

    async def worker(self, client: QuestionClient, queue: asyncio.Queue[Chunk]) -> None:
        n = self.spec.questions_per_chunk
        while True:
            try:
                chunk = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            answer = await client.complete(render_prompt(self.spec.prompt_template, chunk.text, n))
            parsed = parse_questions(answer, limit=n)
            if len(parsed.questions) < n:
                self.short += 1
                msg = (
                    f"chunk {chunk.hash[:12]} of {chunk.source}: {len(parsed.questions)} of {n} questions "
                    f"(dropped {len(parsed.dropped_lines)} non-question line(s), {parsed.duplicates} "
                    "duplicate(s))"
                )
                log.warning("%s", msg)
                if len(self.warnings) < _MAX_WARNINGS:
                    self.warnings.append(msg)
            self.state.chunks[chunk.hash] = ChunkResult(
                source=chunk.source,
                questions=parsed.questions,
                asked=n,
                dropped_lines=len(parsed.dropped_lines),
                duplicates=parsed.duplicates,
            )
            self.done_this_run += 1
            self.unsaved += 1
            if self.unsaved >= self.spec.save_every:
                await asyncio.to_thread(self.save)
            if self.on_progress is not None:
                self.on_progress(len(self.state.chunks), self.total)


async def generate_dataset(
    spec: GenerateSpec,
    documents: list[str],
    output_dir: str,
    api_key: str | None,
    *,
    seed: int = 42,
    storage_options: dict[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
    sleep: SleepFn = asyncio.sleep,
) -> GenerationResult:
    """Generate train/validation EmbeddingQA datasets from `documents` with the LLM of `spec.llm`.

    `documents` are local files or directories (a mounted ConfigMap or PVC path), http(s):// URLs or s3://
    URIs. Writes `train.json`, `val.json` (unless validationFraction is 0), `generation_report.json` and the
    resume state `generation_state.json` below `output_dir` (a local path or s3:// URI). A restarted run
    reuses the questions of chunks already done. `storage_options` go to fsspec for s3://; `on_progress`
    gets (chunks done, chunks in all). Raises GenerationError naming the document or the LLM URL.
    """
    started = time.monotonic()
    started_at = datetime.now(UTC)
    warnings: list[str] = []
    output_dir = output_dir.rstrip("/")

    docs = await asyncio.to_thread(load_documents, documents, storage_options, warnings)
    chunks = make_chunks([(d.source, d.text) for d in docs], spec.chunk_size, spec.chunk_overlap)
    fingerprint = settings_fingerprint(spec.llm.model, spec.prompt_template, spec.questions_per_chunk)
    state = await asyncio.to_thread(load_state, output_dir, fingerprint, storage_options, warnings)
    resumed = sum(1 for c in chunks if c.hash in state.chunks)
    pending = [c for c in chunks if c.hash not in state.chunks]
    log.info(
        "generation: %d document(s), %d chunk(s), %d already done, %d to ask %s",
        len(docs),
        len(chunks),
        resumed,
        len(pending),
        spec.llm.base_url,
    )

    run = _Run(spec, state, output_dir, storage_options, warnings, on_progress, len(chunks))
    client = QuestionClient(
        base_url=spec.llm.base_url,
        model=spec.llm.model,
        api_key=api_key,
        temperature=spec.llm.temperature,
        max_concurrency=spec.llm.max_concurrency,
        max_retries=spec.llm.max_retries,
        sleep=sleep,
    )
    queue: asyncio.Queue[Chunk] = asyncio.Queue()
    for chunk in pending:
        queue.put_nowait(chunk)
    try:
        if pending:
            async with client:
                workers = [
                    asyncio.create_task(run.worker(client, queue))
                    for _ in range(min(spec.llm.max_concurrency, len(pending)))
                ]
                try:
                    done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        failure = task.exception()
                        if failure is not None:
                            raise failure
                finally:
                    for task in workers:
                        task.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
    finally:
        # keep what was done even when failing or cancelled, so a restart continues from here
        for key, value in client.usage.as_dict().items():
            state.usage[key] = state.usage.get(key, 0) + value
        state.runs += 1
        try:
            run.save()
        except GenerationError as exc:
            log.error("%s", exc)

    full, cross_duplicates = build_dataset(chunks, state.chunks)
    if not full.queries:
        raise GenerationError(
            f"the LLM at {spec.llm.base_url} (model {spec.llm.model!r}) gave no usable questions for any of "
            f"{len(chunks)} chunk(s); check the model and promptTemplate"
        )
    if spec.validation_fraction > 0 and len(full.queries) >= 2:
        train, val, split = split_by_chunk(full, spec.validation_fraction, seed)
    else:
        train, val, split = full, None, "none"
        if spec.validation_fraction > 0:
            warnings.append("only one question was generated; no validation set")
    try:
        validate_dataset(train, "generated train dataset")
        if val is not None:
            validate_dataset(val, "generated validation dataset")
    except DatasetError as exc:  # a bug here, not bad input: say so plainly
        raise GenerationError(f"generated dataset is inconsistent: {exc.message}") from exc

    train_path = f"{output_dir}/{TRAIN_FILE}"
    val_path = f"{output_dir}/{VALIDATION_FILE}" if val is not None else None
    await asyncio.to_thread(save_dataset, train, train_path)
    if val is not None and val_path is not None:
        await asyncio.to_thread(save_dataset, val, val_path)

    this_run = client.usage.as_dict()
    report: dict[str, Any] = {
        "documents": len(docs),
        "chunks": len(chunks),
        "chunks_generated": run.done_this_run,
        "chunks_resumed": resumed,
        "chunks_short": sum(
            1
            for c in chunks
            if c.hash in state.chunks and len(state.chunks[c.hash].questions) < state.chunks[c.hash].asked
        ),
        "questions_per_chunk": spec.questions_per_chunk,
        "questions": len(full.queries),
        "duplicates_dropped": cross_duplicates + sum(r.duplicates for r in state.chunks.values()),
        "train_queries": len(train.queries),
        "validation_queries": len(val.queries) if val is not None else 0,
        "corpus": len(full.corpus),
        "split": split,
        **{k: state.usage.get(k, 0) for k in this_run},
        "this_run": this_run,
        "runs": state.runs,
        "model": spec.llm.model,
        "llm_base_url": spec.llm.base_url,
        "train_path": train_path,
        "validation_path": val_path,
        "started_at": started_at.isoformat(),
        "wall_seconds": round(time.monotonic() - started, 3),
        "warnings": warnings[:_MAX_WARNINGS]
        + ([f"... and {len(warnings) - _MAX_WARNINGS} more"] if len(warnings) > _MAX_WARNINGS else []),
    }
    await asyncio.to_thread(_write_json, f"{output_dir}/{REPORT_FILE}", report, storage_options)
    log.info(
        "generation done: %d questions (%d train, %d validation) from %d chunks; %d requests, %d tokens",
        report["questions"],
        report["train_queries"],
        report["validation_queries"],
        report["chunks"],
        report["requests"],
        report["total_tokens"],
    )
    return GenerationResult(train_path=train_path, validation_path=val_path, report=report)


def _write_json(location: str, payload: dict[str, Any], storage_options: dict[str, Any] | None) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
    with fs.open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False, indent=2)
