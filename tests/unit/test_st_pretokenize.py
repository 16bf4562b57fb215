"""engine_st.PretokenizedCollator: batches padded from the cached token ids equal the trainer's collator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.trainer_fixtures import TRAIN, build_tiny_model

from finetune_trainer.engine_st import PretokenizedCollator, _same_batch

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("pretok")
    model = SentenceTransformer(str(build_tiny_model(tmp / "model")), device="cpu")
    data = json.loads(TRAIN.read_text())
    queries = list(data["queries"].items())[:40]
    anchors = [t for _, t in queries]
    positives = [data["corpus"][data["relevant_docs"][q][0]] for q, _ in queries]
    anchors[3] = "  padded with spaces  "
    anchors[4] = "word " * 400  # truncated to max_seq_length
    positives[5] = positives[6]  # a repeated text
    ds = Dataset.from_dict({"anchor": anchors, "positive": positives})
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp / "out"), use_cpu=True, report_to="none")
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=losses.MultipleNegativesRankingLoss(model)
    )
    return trainer.data_collator, ds


def test_padded_from_cache_equals_collator(setup: tuple[Any, Any]) -> None:
    inner, ds = setup
    fast = PretokenizedCollator.build(inner, ds, check_batch=8)
    assert fast is not None
    assert fast.valid_label_columns == inner.valid_label_columns  # delegated attribute
    gen = torch.Generator().manual_seed(1)
    for size in (1, 3, 16, 40):
        idx = [int(i) for i in torch.randperm(len(ds), generator=gen)[:size]]
        features = ds.__getitems__(idx)
        a, b = inner(features), fast(features)
        assert _same_batch(a, b), (size, list(a), list(b))
    long = fast(ds.__getitems__([4]))
    assert long["anchor_input_ids"].shape[1] == inner.preprocess_fn.__self__.max_seq_length


def test_unknown_text_and_columns_use_the_collator(setup: tuple[Any, Any]) -> None:
    inner, ds = setup
    fast = PretokenizedCollator.build(inner, ds)
    assert fast is not None
    new = [{"anchor": "a text that was never cached", "positive": "nor this one"}]
    assert _same_batch(fast(new), inner(new))
    swapped = [{"positive": r["positive"], "anchor": r["anchor"]} for r in ds.__getitems__([0, 1])]
    assert _same_batch(fast(swapped), inner(swapped))


def test_build_refuses_a_collator_it_cannot_reproduce(setup: tuple[Any, Any]) -> None:
    inner, ds = setup

    def per_batch(features: list[dict[str, Any]]) -> dict[str, Any]:
        out = dict(inner(features))
        for key in [k for k in out if k.endswith("_input_ids")]:
            out[key] = out[key] + len(features)  # depends on the batch size
        return out

    assert PretokenizedCollator.build(per_batch, ds) is None
    assert not _same_batch({"x": torch.ones(2)}, {"x": torch.ones(3)})
    assert not _same_batch({"x": 1}, {"y": 1})


def test_no_cache_for_an_empty_set(setup: tuple[Any, Any], tmp_path: Path) -> None:
    inner, ds = setup
    assert PretokenizedCollator.build(inner, ds.select([])) is None


def test_auto_precision_is_fp32_for_small_models_on_cuda() -> None:
    from finetune_trainer.st_recipe import AUTO_FP32_MAX_PARAMS, precision_flags

    fp32 = {"bf16": False, "fp16": False}
    assert precision_flags("auto", cuda=False, params=10**9) == fp32
    assert precision_flags("auto", cuda=True, params=22_700_000) == fp32
    assert precision_flags("auto", cuda=True, params=AUTO_FP32_MAX_PARAMS) == fp32
    assert precision_flags("bf16", cuda=True, params=22_700_000) == {"bf16": True, "fp16": False}
    assert precision_flags("fp16", cuda=True, params=22_700_000) == {"bf16": False, "fp16": True}
    assert precision_flags("fp32", cuda=True, params=10**9) == fp32


def test_cpu_precision_is_bf16_only_where_the_cpu_computes_it() -> None:
    from finetune_trainer.st_recipe import precision_flags

    fp32, bf16 = {"bf16": False, "fp16": False}, {"bf16": True, "fp16": False}
    assert precision_flags("auto", cuda=False, cpu_bf16=True) == bf16  # AVX512_BF16 / AMX: autocast
    assert precision_flags("auto", cuda=False, cpu_bf16=False) == fp32
    assert precision_flags("bf16", cuda=False, cpu_bf16=False) == bf16  # asked for: emulated, but honoured
    assert precision_flags("fp32", cuda=False, cpu_bf16=True) == fp32
    assert precision_flags("fp16", cuda=False, cpu_bf16=True) == fp32  # no fp16 training on CPU
