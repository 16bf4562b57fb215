"""The sentence-transformers engine's training recipe by device and model size: mixed precision, the
learning rate when the job sets none, and the attention-probability dropout.

Attention dropout: transformers' BERT-family self-attention modules pass `self.dropout.p` to
torch.nn.functional.scaled_dot_product_attention when training. On CPU, PyTorch's fused (flash) attention
kernel has no dropout, so any p > 0 falls back to the unfused math path: measured with all-MiniLM-L6-v2,
batch 16, 256 tokens, 2 threads, a training step took 3.27 s with p = 0.1 and 2.24 s with p = 0 (fp32),
2.66 s and 1.50 s under bf16 autocast. `spec.attentionDropout` sets p on those modules (their hidden-state
dropout stays as it is); the saved model's config is not changed. Unset on CPU it is 0
(CPU_ATTENTION_DROPOUT): on three real retrieval sets (bench/sweep.py) 1 epoch with p = 0 gained as much
MRR@10 as with 0.1, or more.
"""

from __future__ import annotations

from typing import Any

AUTO_FP32_MAX_PARAMS = 50_000_000  # `auto` on CUDA: fp32 weights + TF32 matmuls up to this size, else bf16


def precision_flags(precision: str, cuda: bool, params: int = 0, cpu_bf16: bool = False) -> dict[str, bool]:
    """Mixed-precision flags.

    CPU: bf16 autocast (oneDNN) under `auto` when the CPU computes bf16 natively (`cpu_bf16`: AVX512_BF16
    or AMX, see cpu.cpu_precision; measured on an AVX512_BF16 EPYC with all-MiniLM-L6-v2 at batch 16: 1.5x
    the fp32 steps/s at the same MRR@10, docs/benchmarks.md), and under `bf16`; fp32 otherwise (`fp16` is
    not offered on CPU). CUDA, `auto`: fp32 with TF32 matmuls for small models (up to AUTO_FP32_MAX_PARAMS;
    measured on an H100 with all-MiniLM-L6-v2: bf16 autocast was 2.6x slower at batch 16 and no faster at
    batch 512, its per-step weight casts cost more than the matmuls save), else bf16 when supported, fp16
    otherwise."""
    fp32 = {"bf16": False, "fp16": False}
    if precision == "fp32":
        return fp32
    if not cuda:
        return (
            {"bf16": True, "fp16": False}
            if precision == "bf16" or (precision == "auto" and cpu_bf16)
            else fp32
        )
    if precision == "bf16":
        return {"bf16": True, "fp16": False}
    if precision == "fp16":
        return {"bf16": False, "fp16": True}
    if 0 < params <= AUTO_FP32_MAX_PARAMS:
        return fp32
    import torch

    bf16 = bool(torch.cuda.is_bf16_supported())
    return {"bf16": bf16, "fp16": not bf16}


SMALL_MODEL_LR, LARGE_MODEL_LR = 1e-4, 2e-5  # unset learningRate: up to / above AUTO_FP32_MAX_PARAMS


def learning_rate(asked: float | None, params: int) -> float:
    """The job's learning rate, or by model size: 1e-4 up to 50M parameters (the sweep on three real sets
    with all-MiniLM-L6-v2 beat 2e-5 and 5e-5 on every set, docs/benchmarks.md), else sentence-transformers'
    own 2e-5 (a sweep of one small model says little about large ones)."""
    if asked is not None:
        return asked
    return SMALL_MODEL_LR if 0 < params <= AUTO_FP32_MAX_PARAMS else LARGE_MODEL_LR


CPU_ATTENTION_DROPOUT = 0.0  # unset attentionDropout on CPU: the fused attention kernel (module docstring)


def attention_dropout(asked: float | None, cuda: bool) -> float | None:
    """The attention dropout to set: the job's, else CPU_ATTENTION_DROPOUT on CPU, else None (the model's own)."""
    if asked is not None:
        return asked
    return None if cuda else CPU_ATTENTION_DROPOUT


def set_attention_dropout(model: Any, p: float) -> int:
    """Set the attention-probability dropout of every self-attention module of `model`; returns how many."""
    import torch

    changed = 0
    for module in model.modules():
        dropout = getattr(module, "dropout", None)
        if type(module).__name__.endswith("SelfAttention") and isinstance(dropout, torch.nn.Dropout):
            dropout.p = p
            changed += 1
    return changed
