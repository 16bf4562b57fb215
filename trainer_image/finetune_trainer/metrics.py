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
