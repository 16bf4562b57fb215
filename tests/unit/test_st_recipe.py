"""Attention-probability dropout (finetune_trainer.st_recipe): only the self-attention modules' p changes."""

from __future__ import annotations

import pytest

from finetune_trainer.st_recipe import set_attention_dropout

pytestmark = pytest.mark.unit


def test_sets_the_attention_probability_dropout_only() -> None:
    import torch
    from transformers import BertConfig, BertModel

    model = BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    )
    assert set_attention_dropout(model, 0.0) == 2  # one self-attention module per layer
    for layer in model.encoder.layer:
        assert layer.attention.self.dropout.p == 0.0  # what transformers passes to sdpa while training
        assert layer.attention.output.dropout.p == 0.1  # the hidden-state dropout is untouched
        assert layer.output.dropout.p == 0.1
    assert model.config.attention_probs_dropout_prob == 0.1  # the saved config is not changed
    model.train()
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.manual_seed(0)
    a = model(input_ids=ids).last_hidden_state
    torch.manual_seed(1)
    b = model(input_ids=ids).last_hidden_state
    assert not torch.equal(a, b)  # still training with (hidden) dropout


def test_unset_learning_rate_follows_the_model_size() -> None:
    from finetune_trainer.st_recipe import AUTO_FP32_MAX_PARAMS, learning_rate

    assert learning_rate(None, 22_700_000) == 1e-4  # all-MiniLM-L6-v2: the sweep's choice
    assert learning_rate(None, AUTO_FP32_MAX_PARAMS) == 1e-4
    assert learning_rate(None, 109_000_000) == 2e-5  # larger: sentence-transformers' own default
    assert learning_rate(3e-5, 22_700_000) == 3e-5  # the job's own value wins


def test_unset_attention_dropout_is_0_on_cpu_only() -> None:
    from finetune_trainer.st_recipe import attention_dropout

    assert attention_dropout(None, cuda=False) == 0.0  # the fused CPU attention kernel
    assert attention_dropout(None, cuda=True) is None  # the model's own
    assert attention_dropout(0.1, cuda=False) == 0.1
