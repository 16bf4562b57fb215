"""Retrieval metrics from embeddings: hit rate @1/@k, MRR@10, NDCG@10 (same definitions as
sentence-transformers' InformationRetrievalEvaluator; cross-checked in the unit tests)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .data import EmbeddingQADataset

K = 5


def retrieval_metrics(
    query_emb: torch.Tensor, doc_emb: torch.Tensor, relevant: list[set[int]], k: int = K
) -> dict[str, Any]:
    """Cosine-similarity retrieval of each query over all docs; `relevant[i]` = doc indices of query i."""
    import torch

    q = torch.nn.functional.normalize(query_emb.float(), dim=-1)
    d = torch.nn.functional.normalize(doc_emb.float(), dim=-1)
    top = max(k, 10, 1)
    top = min(top, d.shape[0])
    hits1 = hitsk = 0
    mrr = ndcg = 0.0
    for start in range(0, q.shape[0], 1024):
        scores = q[start : start + 1024] @ d.T
        idx = torch.topk(scores, top, dim=1).indices.tolist()
        for row, ranked in enumerate(idx):
            rel = relevant[start + row]
            flags = [doc in rel for doc in ranked]
            hits1 += int(any(flags[:1]))
            hitsk += int(any(flags[:k]))
            for rank, flag in enumerate(flags[:10]):
                if flag:
                    mrr += 1.0 / (rank + 1)
                    break
            dcg = sum(1.0 / math.log2(r + 2) for r, f in enumerate(flags[:10]) if f)
            idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(rel), 10)))
            ndcg += dcg / idcg if idcg else 0.0
    n = max(1, q.shape[0])
    return {
        "hitRateAt1": hits1 / n,
        "hitRateAtK": hitsk / n,
        "k": k,
        "mrrAt10": mrr / n,
        "ndcgAt10": ndcg / n,
        "queries": int(q.shape[0]),
    }


def eval_indices(ds: EmbeddingQADataset) -> tuple[list[str], list[str], list[set[int]]]:
    """Query ids, doc ids and relevant doc indices per query for a validation dataset."""
    qids = list(ds.queries)
    dids = list(ds.corpus)
    pos = {d: i for i, d in enumerate(dids)}
    relevant = [{pos[d] for d in ds.relevant_docs.get(q, []) if d in pos} for q in qids]
    return qids, dids, relevant


def evaluate_model(model: Any, ds: EmbeddingQADataset, k: int = K, batch_size: int = 64) -> dict[str, Any]:
    """Evaluate a SentenceTransformer: queries via encode_query, docs via encode_document."""
    qids, dids, relevant = eval_indices(ds)
    q = model.encode_query([ds.queries[i] for i in qids], batch_size=batch_size, convert_to_tensor=True)
    d = model.encode_document([ds.corpus[i] for i in dids], batch_size=batch_size, convert_to_tensor=True)
    return retrieval_metrics(q.cpu(), d.cpu(), relevant, k)


MAX_CURVE_POINTS = 30  # validation curve points kept for result.json / status (first, best and last kept)


class Selection:
    """Validation-driven model selection: the curve of (step, metric), the best step (step 0 = the base
    model), and early stopping after `patience` evaluations in a row without an improvement > min_delta."""

    def __init__(self, metric: str = "mrrAt10", patience: int = 3, min_delta: float = 0.0) -> None:
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.curve: list[tuple[int, float]] = []
        self.best_step: int | None = None
        self.best_value = -math.inf
        self.since_best = 0
        self.seconds = 0.0  # time spent evaluating during training (callers add to it)

    def record(self, step: int, metrics: dict[str, Any]) -> bool:
        """Add an evaluation; True when it is the new best."""
        value = float(metrics[self.metric])
        if self.curve and self.curve[-1][0] == step:
            return False  # the same step evaluated twice (e.g. the last step is also an epoch end)
        self.curve.append((step, value))
        if self.best_step is None or value > self.best_value + self.min_delta:
            self.best_step, self.best_value, self.since_best = step, value, 0
            return True
        self.since_best += 1
        return False

    def describe(self, step: int, metrics: dict[str, Any]) -> str:
        """The log line of an evaluation: its value and the best so far."""
        return (
            f"step {step}: validation {self.metric} {float(metrics[self.metric]):.4f} "
            f"(best {self.best_value:.4f} at step {self.best_step})"
        )

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "curve": [list(p) for p in self.curve],
            "best_step": self.best_step,
            "best_value": self.best_value if self.best_step is not None else None,
            "since_best": self.since_best,
            "seconds": self.seconds,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.curve = [(int(s), float(v)) for s, v in state.get("curve", [])]
        self.best_step = state.get("best_step")
        best = state.get("best_value")
        self.best_value = float(best) if best is not None else -math.inf
        self.since_best = int(state.get("since_best", 0))
        self.seconds = float(state.get("seconds", 0.0))

    def summary(self, stopped_early: bool = False) -> dict[str, Any]:
        """What result.json says: the best step, the metric, the (bounded) validation curve."""
        return {
            "bestStep": self.best_step,
            "selectionMetric": self.metric,
            "stoppedEarly": stopped_early,
            "evaluationSeconds": round(self.seconds, 3),
            "validationCurve": [
                {"step": s, self.metric: round(v, 5)} for s, v in thin_curve(self.curve, self.best_step)
            ],
        }


def thin_curve(
    curve: list[tuple[int, float]], keep: int | None, limit: int = MAX_CURVE_POINTS
) -> list[tuple[int, float]]:
    """At most `limit` points, evenly spaced, always with the first, the last and the `keep` step."""
    if len(curve) <= limit:
        return list(curve)
    picks = {0, len(curve) - 1}
    picks |= {i for i, (s, _) in enumerate(curve) if s == keep}
    room = limit - len(picks)
    stride = (len(curve) - 1) / max(1, room + 1)
    picks |= {round(stride * (j + 1)) for j in range(room)}
    return [curve[i] for i in sorted(picks)][:limit]
