"""The sentence-transformers engine picks the cached (GradCache) MNRL for large batches on small devices."""

from __future__ import annotations

import pytest

from finetune_operator.api.engines import SentenceTransformersEngine
from finetune_trainer.engine_st import choose_loss

pytestmark = pytest.mark.unit
CACHED = "CachedMultipleNegativesRankingLoss"


def _spec(**kw: object) -> SentenceTransformersEngine:
    return SentenceTransformersEngine.model_validate(kw)


def test_small_batches_keep_mnrl_everywhere() -> None:
    for cuda, mem in ((False, 0), (True, 8 * 2**30), (True, 80 * 2**30)):
        assert choose_loss(_spec(batchSize=16), cuda, mem)[0] == "MultipleNegativesRankingLoss"


def test_large_batch_on_cpu_or_small_gpu_goes_cached() -> None:
    assert choose_loss(_spec(batchSize=256), False) == (CACHED, 32)
    assert choose_loss(_spec(batchSize=256), True, 16 * 2**30) == (CACHED, 64)
    assert choose_loss(_spec(batchSize=256), True, 80 * 2**30)[0] == "MultipleNegativesRankingLoss"
    assert choose_loss(_spec(batchSize=1024), True, 80 * 2**30) == (CACHED, 256)


def test_an_explicit_cached_loss_keeps_its_mini_batch() -> None:
    assert choose_loss(_spec(loss=CACHED, miniBatchSize=8, batchSize=16), False) == (CACHED, 8)
