"""Length-grouped, duplicate-free batches for the in-batch-negatives losses of sentence-transformers.

Padding is to the longest text of a batch, so on a CPU a batch of 16 documents whose lengths spread from
one line to three paragraphs costs what 16 of its longest would. Like `group_by_length` of the HF
Trainer (megabatches of 50 batches), each epoch's shuffle is cut into groups of GROUP_BATCHES batches and
every group is sorted by length before it is cut into batches, so a batch holds texts of similar length;
the batches' order is shuffled again, so an epoch does not run from long to short. Within a batch no text
appears twice, in any column (the rule of sentence-transformers' NoDuplicatesBatchSampler: a duplicate
would be a false negative of MultipleNegativesRankingLoss); a conflicting pair moves to the next batch of
its group.

Seeded by (seed + epoch), as the library's samplers are, so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

GROUP_BATCHES = 16  # batches per length-sorted group


def plan_batches(
    rows: Sequence[tuple[str, ...]],
    batch_size: int,
    drop_last: bool,
    seed: int,
    group_batches: int = GROUP_BATCHES,
) -> list[list[int]]:
    """One epoch's batches (row indices) for rows of texts: shuffled, grouped, sorted by length within a
    group, duplicate-free within a batch, in a shuffled order. Pure: the same arguments give the same plan."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=generator).tolist()
    size = batch_size * max(1, group_batches)
    batches: list[list[int]] = []
    carry: list[int] = []  # pairs that conflicted in their group go first into the next one
    for start in range(0, len(order), size):
        group = carry + order[start : start + size]
        group.sort(key=lambda i: -sum(len(t) for t in rows[i]))
        full, carry = _fill(rows, group, batch_size)
        batches.extend(full)
    while carry:  # the last group's leftovers, greedily; the first one always fits, so this ends
        batch, carry = _take_batch(rows, carry, batch_size)
        batches.append(batch)
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def _take_batch(
    rows: Sequence[tuple[str, ...]], pending: list[int], batch_size: int
) -> tuple[list[int], list[int]]:
    """One greedy pass: the first up to batch_size indices of pending with no text in common, in order, and
    the indices left for later."""
    batch: list[int] = []
    seen: set[str] = set()
    rest: list[int] = []
    for i in pending:
        if len(batch) < batch_size and seen.isdisjoint(rows[i]):
            batch.append(i)
            seen.update(rows[i])
        else:
            rest.append(i)
    return batch, rest


def _fill(
    rows: Sequence[tuple[str, ...]], group: list[int], batch_size: int
) -> tuple[list[list[int]], list[int]]:
    """Cut a length-sorted group into duplicate-free batches of batch_size, in order; returns the full
    batches and the indices left over (conflicts, and a last partial batch)."""
    batches: list[list[int]] = []
    pending = list(group)
    while pending:
        batch, rest = _take_batch(rows, pending, batch_size)
        if len(batch) < batch_size:
            return batches, batch + rest
        batches.append(batch)
        pending = rest
    return batches, []


def length_grouped_sampler(dataset: Any, batch_size: int, drop_last: bool, **kwargs: Any) -> Any:
    """The `batch_sampler` callable for SentenceTransformerTrainingArguments: a DefaultBatchSampler (the
    Trainer calls set_epoch on it) that yields plan_batches for its epoch."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    columns = [c for c in dataset.column_names if c not in ("label", "score", "dataset_name")]
    rows = [tuple(str(v) for v in values) for values in zip(*(dataset[c] for c in columns), strict=True)]

    class LengthGroupedBatchSampler(DefaultBatchSampler):  # type: ignore[misc]
        def __iter__(self) -> Iterator[list[int]]:
            yield from plan_batches(rows, self.batch_size, self.drop_last, int(self.seed or 0) + self.epoch)

        def __len__(self) -> int:
            if self.drop_last:
                return len(rows) // self.batch_size
            return (len(rows) + self.batch_size - 1) // self.batch_size

    return LengthGroupedBatchSampler(dataset, batch_size=batch_size, drop_last=drop_last, **kwargs)
