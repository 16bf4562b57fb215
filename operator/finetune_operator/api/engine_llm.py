"""The in-cluster LLM engine (`spec.engine.llm`): a LoRA (or QLoRA) finetune of a causal language model on
the chat data the OpenAI engine takes, with TRL's SFTTrainer (method sft) or DPOTrainer (method dpo).

Hyperparameters map one to one from the OpenAI engine's: `n_epochs` -> `epochs`, `batch_size` -> `batchSize`
(times `gradientAccumulation` and the GPU count), `learning_rate_multiplier` -> `learningRate` (multiplier x
2e-4, the default here).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .common import KubeModel

# A model reference: hub id (org/name), a path inside the trainer image, or pvc://CLAIM/PATH.
MODEL_REF = r"^[^\s]+$"
# A module name PEFT matches against the model's module names (e.g. q_proj, mlp.down_proj).
MODULE_NAME = r"^[A-Za-z0-9_.\-*]+$"
DEFAULT_LEARNING_RATE = 2e-4

ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=MODULE_NAME)]


class LoraSpec(KubeModel):
    """The LoRA adapter trained on the frozen base model (PEFT LoraConfig)."""

    rank: int = Field(default=16, ge=1, le=1024, description="LoRA rank r (PEFT `r`).")
    alpha: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="LoRA scaling alpha (PEFT `lora_alpha`); the update is scaled by alpha/rank.",
    )
    dropout: float = Field(
        default=0.05, ge=0, lt=1, description="Dropout on the LoRA input (PEFT `lora_dropout`)."
    )
    target_modules: list[ModuleName] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Module names the adapter wraps, e.g. [q_proj, v_proj]. Default: every linear layer of the "
        "attention and MLP blocks (PEFT `all-linear`; the output head is left out).",
    )


class LlmEngine(KubeModel):
    """LoRA finetune of a causal LLM in a GPU pod, on OpenAI-format chat (sft) or preference (dpo) JSONL."""

    base_model: str = Field(
        min_length=1,
        max_length=2048,
        pattern=MODEL_REF,
        description="Model to finetune: a Hugging Face hub id, a path inside the trainer image, or "
        "pvc://CLAIM/PATH of a saved transformers causal LM (offline clusters keep models on a PVC). Its "
        "tokenizer must have a chat template.",
    )
    method: Literal["sft", "dpo"] = Field(
        default="sft",
        description="sft: supervised finetune on chat JSONL (loss on assistant tokens only); dpo: direct "
        "preference optimisation on preference JSONL.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="The LoRA adapter.")
    quantization: Literal["none", "4bit"] = Field(
        default="none",
        description="4bit: load the base model in 4-bit NF4 with bitsandbytes and train the adapter on it "
        "(QLoRA). Needs a GPU (placement.resources.gpu.count > 0).",
    )
    epochs: int = Field(
        default=3, ge=1, le=100, description="Passes over the training data (OpenAI `n_epochs`)."
    )
    batch_size: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Examples per GPU per forward pass (OpenAI `batch_size` = batchSize x gradientAccumulation "
        "x GPUs).",
    )
    gradient_accumulation: int = Field(
        default=1, ge=1, le=1024, description="Forward passes accumulated into one optimizer step."
    )
    learning_rate: float = Field(
        default=DEFAULT_LEARNING_RATE,
        gt=0,
        le=1,
        description="Peak learning rate of AdamW on the adapter (OpenAI `learning_rate_multiplier` x 2e-4).",
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0, le=1, description="Fraction of the optimizer steps used for linear warmup."
    )
    max_seq_length: int = Field(
        default=1024,
        ge=16,
        le=131072,
        description="Examples are truncated to this many tokens (after the chat template is applied).",
    )
    packing: bool = Field(
        default=False,
        description="sft only: pack several examples into one sequence of maxSeqLength tokens (TRL packing).",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto",
        description="auto: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU.",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, about 30% slower.",
    )
    seed: int | None = Field(
        default=None, ge=0, le=2147483647, description="Random seed of the training run (spec.seed if unset)."
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        le=100,
        description="dpo only: the DPO temperature beta (how far the policy may move from the base model).",
    )
    merge: bool = Field(
        default=False,
        description="Also save the adapter merged into the base weights (a plain transformers model, in "
        "model/merged), for runtimes that do not load adapters.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow custom modelling code shipped with the base model."
    )
    eval_generations: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Greedy generations from the first N validation prompts, before and after training, kept "
        "in result.json.",
    )
    max_new_tokens: int = Field(
        default=64, ge=1, le=4096, description="Token limit of each evaluation generation."
    )
