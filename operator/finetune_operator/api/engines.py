"""Training engines of a FinetuneJob: set exactly one of spec.engine.*."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .common import MAX_ID, MAX_URI, KubeModel, Refused, SecretKeyRef, Url, no_userinfo
from .engine_llm import LlmEngine
from .evaluation import EvaluationSpec, HardNegativesSpec

STORAGE_URI = (
    r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\s]*)?|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[^\s]*)?)$"
)


class EngineKind(StrEnum):
    SENTENCE_TRANSFORMERS = "sentenceTransformers"
    ADAPTER = "adapter"
    OPENAI = "openai"
    GRADIENT = "gradient"
    LLM = "llm"


IN_CLUSTER_ENGINES = (EngineKind.SENTENCE_TRANSFORMERS, EngineKind.ADAPTER, EngineKind.LLM)
# The in-cluster engines that train embedding models (on embeddingQA data, or data generated for them).
EMBEDDING_ENGINES = (EngineKind.SENTENCE_TRANSFORMERS, EngineKind.ADAPTER)


# ---------------------------------------------------------------------------- engines


class SentenceTransformersEngine(KubeModel):
    """Full finetune of a sentence-transformers model (the reference's SentenceTransformersFinetuneEngine)."""

    model: str = Field(
        default="BAAI/bge-small-en",
        min_length=1,
        max_length=MAX_URI,
        description="Model to finetune: a Hugging Face hub id, a path inside the trainer image, or "
        "pvc://CLAIM/PATH of a saved sentence-transformers model.",
    )
    batch_size: int = Field(default=10, ge=1, le=65536, description="Training batch size (pairs per step).")
    epochs: int = Field(default=2, ge=1, le=1000, description="Number of passes over the training pairs.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Peak learning rate of AdamW. Unset: 1e-4 for models up to 50M parameters (chosen by a "
        "sweep on three real retrieval sets with all-MiniLM-L6-v2, docs/benchmarks.md), 2e-5 "
        "(sentence-transformers' default) for larger ones.",
    )
    warmup_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Fraction of the training steps used for linear warmup."
    )
    loss: Literal["MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss"] = Field(
        default="MultipleNegativesRankingLoss",
        description="Training loss. The cached variant keeps memory flat for large batch sizes.",
    )
    mini_batch_size: int = Field(
        default=32, ge=1, le=65536, description="Mini-batch size of CachedMultipleNegativesRankingLoss."
    )
    evaluation_steps: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Older name of evaluation.steps: evaluate every N steps (0: once per epoch); "
        "evaluation.steps wins when both are set.",
    )
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec,
        description="Validation during training: when to evaluate, early stopping, and which model is kept.",
    )
    hard_negatives: HardNegativesSpec = Field(
        default_factory=HardNegativesSpec,
        description="Hard negatives mined with the base model and added to the ranking loss (off by default).",
    )
    use_all_docs: bool = Field(
        default=False, description="Make one training pair per relevant document instead of only the first."
    )
    group_by_length: bool = Field(
        default=False,
        description="Batch texts of similar length together (less padding), still without duplicates in a "
        "batch; each epoch's shuffle is sorted by length in groups of 16 batches.",
    )
    max_seq_length: int | None = Field(
        default=None,
        ge=8,
        le=32768,
        description="Truncate inputs to this many tokens (model default if unset).",
    )
    attention_dropout: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Dropout on the attention probabilities while training. Unset: 0 on CPU, where "
        "PyTorch's fused attention kernel has no dropout variant (measured 1.5-1.9x faster steps at an equal "
        "or better MRR@10 on three real sets, docs/benchmarks.md), and the model's own on GPUs (0.1 for "
        "BERT-like models).",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow custom modelling code shipped with the model."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto",
        description="auto: on CUDA, fp32 weights with TF32 matmuls for models up to 50M parameters (measured fastest for MiniLM-sized models) and bf16 (fp16 without bf16 support) above; on CPU, bf16 autocast where the CPU computes bf16 natively (AVX512_BF16 or AMX; FINETUNE_CPU_PRECISION=fp32 in the trainer's env turns it off), else fp32.",
    )


class AdapterSpec(KubeModel):
    """The adapter network placed on top of the frozen embedding model (applied to queries only)."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.kind == 'twoLayer' || !has(self.hiddenSize)",
                    "message": "hiddenSize applies only to kind twoLayer",
                },
            ]
        }
    }

    kind: Literal["linear", "twoLayer"] = Field(
        default="linear",
        description="linear: identity-initialised matrix; twoLayer: MLP with a hidden layer.",
    )
    hidden_size: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Hidden size of a twoLayer adapter (default: 2x the embedding size).",
    )
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(
        default="relu", description="Activation of a twoLayer adapter."
    )
    residual: bool = Field(default=True, description="twoLayer only: add the input to the output.")

    @model_validator(mode="after")
    def _linear_has_no_hidden(self) -> AdapterSpec:
        if self.kind == "linear" and self.hidden_size is not None:
            raise ValueError("hiddenSize applies only to kind twoLayer")
        return self


class AdapterEngine(KubeModel):
    """An adapter trained on a frozen embedding model (the reference's EmbeddingAdapterFinetuneEngine)."""

    base_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        min_length=1,
        max_length=MAX_URI,
        description="Frozen embedding model: hub id, image path or pvc://CLAIM/PATH.",
    )
    adapter: AdapterSpec = Field(default_factory=AdapterSpec, description="Shape of the adapter.")
    bias: bool = Field(default=False, description="Give the adapter's layers a bias term.")
    dim: int | None = Field(
        default=None, ge=1, le=65536, description="Embedding dimension (read from the model if unset)."
    )
    batch_size: int = Field(default=10, ge=1, le=65536, description="Training batch size.")
    epochs: int = Field(
        default=4,
        ge=1,
        le=10000,
        description="Number of passes over the training pairs (validation picks the best step; see evaluation).",
    )
    learning_rate: float = Field(
        default=1e-3,
        gt=0,
        le=10,
        description="Peak learning rate of AdamW (linear decay to 0). Default chosen by the sweep in "
        "docs/benchmarks.md.",
    )
    weight_decay: float = Field(default=0.0, ge=0, le=10, description="Weight decay of AdamW.")
    temperature: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="Softmax temperature of the in-batch ranking loss (similarity scale = 1 / temperature).",
    )
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec,
        description="Validation during training: when to evaluate, early stopping, and which model is kept.",
    )
    continue_from: str | None = Field(
        default=None,
        max_length=MAX_URI,
        pattern=STORAGE_URI,
        description="Storage URI of an adapter saved by an earlier job, to continue training from.",
    )


class OpenAIHyperparameters(KubeModel):
    """Hyperparameters of an OpenAI fine-tuning job (`method.supervised.hyperparameters`)."""

    epochs: int | None = Field(default=None, ge=1, le=50, description="n_epochs; provider default if unset.")
    batch_size: int | None = Field(
        default=None, ge=1, le=256, description="batch_size; provider default if unset."
    )
    learning_rate_multiplier: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[0-9]*\.?[0-9]+$",
        description='learning_rate_multiplier as a decimal string, e.g. "0.5"; provider default if unset.',
    )


class HostedEndpoint(KubeModel):
    """Where a hosted-API engine sends its requests."""

    base_url: Url | None = Field(
        default=None,
        max_length=MAX_URI,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of an OpenAI-compatible API (default https://api.openai.com/v1).",
    )
    api_version: str | None = Field(
        default=None,
        max_length=64,
        description="API version for Azure-style deployments (sent as api-version).",
    )
    organization: str | None = Field(default=None, max_length=256, description="Organization id header.")
    api_key: Annotated[str | None, Refused("spec.engine.openai.apiKeySecretRef")] = None

    _urls = field_validator("base_url")(no_userinfo)


class OpenAIEngine(KubeModel):
    """A finetune proxied to the OpenAI fine-tuning API (the reference's OpenAIFinetuneEngine)."""

    base_model: str = Field(
        default="gpt-4o-mini-2024-07-18", min_length=1, max_length=MAX_ID, description="Model to finetune."
    )
    api_key_secret_ref: SecretKeyRef = Field(description="Secret key holding the API key.")
    api_key: Annotated[str | None, Refused("apiKeySecretRef")] = None
    token: Annotated[str | None, Refused("apiKeySecretRef")] = None
    hyperparameters: OpenAIHyperparameters = Field(
        default_factory=OpenAIHyperparameters, description="Training hyperparameters."
    )
    suffix: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-zA-Z0-9_-]*$",
        description="Suffix of the fine-tuned model's name.",
    )
    seed: int | None = Field(default=None, ge=0, le=2147483647, description="Seed for reproducibility.")
    start_job_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Attach to this existing remote job instead of creating one.",
    )
    endpoint: HostedEndpoint = Field(default_factory=HostedEndpoint, description="API endpoint.")


class GradientEngine(KubeModel):
    """A finetune proxied to a Gradient-compatible API (the reference's GradientFinetuneEngine).

    Set either baseModelSlug (a new adapter is created) or modelAdapterId (an existing one is trained).
    """

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.baseModelSlug) != has(self.modelAdapterId)",
                    "message": "set exactly one of baseModelSlug or modelAdapterId",
                },
            ]
        }
    }

    base_model_slug: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID,
        description="Base model to create a new adapter on, e.g. llama2-7b-chat.",
    )
    model_adapter_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID,
        description="Existing model adapter to continue training.",
    )
    name: str | None = Field(default=None, max_length=128, description="Name of the new adapter.")
    rank: int | None = Field(default=None, ge=1, le=1024, description="LoRA rank of the new adapter.")
    learning_rate: float | None = Field(
        default=None, gt=0, le=1, description="Learning rate of the new adapter."
    )
    batch_size: int = Field(default=10, ge=1, le=10000, description="Samples sent per fine-tune call.")
    max_steps: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Stop after this many fine-tune calls."
    )
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the inputs.")
    host: Url | None = Field(
        default=None,
        max_length=MAX_URI,
        pattern=r"^https?://[^\s]+$",
        description="API host. Gradient's public service closed in 2024: set a compatible host.",
    )
    workspace_id: str | None = Field(default=None, max_length=256, description="Workspace id.")
    access_token_secret_ref: SecretKeyRef = Field(description="Secret key holding the access token.")
    access_token: Annotated[str | None, Refused("accessTokenSecretRef")] = None
    token: Annotated[str | None, Refused("accessTokenSecretRef")] = None
    delete_adapter_on_cancel: bool = Field(
        default=False,
        description="Delete an adapter this job created when the job is deleted before finishing.",
    )

    _urls = field_validator("host")(no_userinfo)

    @model_validator(mode="after")
    def _one_model(self) -> GradientEngine:
        if (self.base_model_slug is None) == (self.model_adapter_id is None):
            raise ValueError("set exactly one of baseModelSlug or modelAdapterId")
        if self.model_adapter_id is not None and (self.rank or self.learning_rate or self.name):
            raise ValueError("name, rank and learningRate apply only to a new adapter (baseModelSlug)")
        return self


class EngineSpec(KubeModel):
    """The training engine. Set exactly one field."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.sentenceTransformers), has(self.adapter), has(self.openai), has(self.gradient), has(self.llm)].filter(x, x).size() == 1",
                    "message": "set exactly one engine: sentenceTransformers, adapter, openai, gradient or llm",
                },
            ]
        }
    }

    sentence_transformers: SentenceTransformersEngine | None = Field(
        default=None, description="Full finetune of a sentence-transformers model in a GPU pod."
    )
    adapter: AdapterEngine | None = Field(
        default=None, description="Adapter on a frozen embedding model, in a GPU pod."
    )
    openai: OpenAIEngine | None = Field(default=None, description="Finetune through the OpenAI API.")
    gradient: GradientEngine | None = Field(
        default=None, description="Finetune through a Gradient-compatible API."
    )
    llm: LlmEngine | None = Field(
        default=None, description="LoRA finetune of an LLM on chat or preference JSONL, in a GPU pod."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EngineSpec:
        chosen = [k for k in EngineKind if getattr(self, _attr(k)) is not None]
        if len(chosen) != 1:
            names = ", ".join(k.value for k in EngineKind)
            got = ", ".join(k.value for k in chosen) or "none"
            raise ValueError(f"set exactly one engine ({names}); got {got}")
        return self

    @property
    def kind(self) -> EngineKind:
        for k in EngineKind:
            if getattr(self, _attr(k)) is not None:
                return k
        raise AssertionError("validated EngineSpec has an engine")

    @property
    def in_cluster(self) -> bool:
        return self.kind in IN_CLUSTER_ENGINES


def _attr(kind: EngineKind) -> str:
    return {"sentenceTransformers": "sentence_transformers"}.get(kind.value, kind.value)
