"""MemoryAtRisk: the trainer pod requests less memory than `bench/trainer.py` measured as the peak for the
same engine, model, batch size and sequence length, so it may be OOM-killed. Pure: a table of measured
peaks (docs/benchmarks.md, "Peak memory") and the job's spec."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.utils.quantity import parse_quantity

from ..api.finetunejob import FinetuneJob

MINILM = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
MODEL_MAX_SEQ = {m: 256 for m in MINILM}  # the model's own max_seq_length when the spec sets none


@dataclass(frozen=True)
class Measured:
    engine: str  # spec.engine key
    models: tuple[str, ...]
    batch_size: int
    max_seq_length: int
    peak_bytes: int
    source: str


GIB = 2**30
MEASURED: tuple[Measured, ...] = (
    # bench/trainer.py peak RSS (getrusage maxrss of the trainer process), CPU, torch threads 2
    Measured("sentenceTransformers", MINILM, 16, 256, int(4.06 * GIB), "2000 pairs of 1-3 paragraph docs"),
    Measured("sentenceTransformers", MINILM, 16, 128, int(1.24 * GIB), "2000 short sample pairs"),
    Measured("adapter", MINILM, 16, 256, int(0.80 * GIB), "2000 sample pairs, 25 epochs"),
)


def _engine(job: FinetuneJob) -> tuple[str, str, int, int] | None:
    eng = job.spec.engine
    if eng.sentence_transformers is not None:
        st = eng.sentence_transformers
        seq = st.max_seq_length or MODEL_MAX_SEQ.get(st.model, 0)
        return "sentenceTransformers", st.model, st.batch_size, seq
    if eng.adapter is not None:
        ad = eng.adapter
        return "adapter", ad.base_model, ad.batch_size, MODEL_MAX_SEQ.get(ad.base_model, 0)
    return None


def measured_peak(job: FinetuneJob) -> Measured | None:
    """The largest measured peak of a run no bigger than this job's (same engine and model, batch size and
    sequence length at most the job's): memory only grows with both."""
    spec = _engine(job)
    if spec is None:
        return None
    engine, model, batch, seq = spec
    rows = [
        m
        for m in MEASURED
        if m.engine == engine and model in m.models and m.batch_size <= batch and m.max_seq_length <= seq
    ]
    return max(rows, key=lambda m: m.peak_bytes) if rows else None


def memory_warning(job: FinetuneJob) -> str | None:
    """A message when spec.placement.resources.memory is below the measured peak, else None."""
    placement = job.spec.placement
    if placement is None or job.spec.engine.kind.value not in ("sentenceTransformers", "adapter"):
        return None
    peak = measured_peak(job)
    if peak is None:
        return None
    try:
        requested = int(parse_quantity(placement.resources.memory))  # type: ignore[no-untyped-call]
    except ValueError:
        return None
    if requested >= peak.peak_bytes:
        return None
    return (
        f"spec.placement.resources.memory {placement.resources.memory} is below the {peak.peak_bytes / GIB:.2f} "
        f"GiB peak measured for {peak.engine} {peak.models[0]} at batch {peak.batch_size}, sequence length "
        f"{peak.max_seq_length} ({peak.source}; docs/benchmarks.md): the trainer pod may be OOM-killed"
    )
