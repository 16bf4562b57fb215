"""The FinetuneJob API (finetune.dev/v1alpha1).

One engine per job, chosen by setting exactly one of `spec.engine.*`. Field names and defaults
follow LlamaIndex's `llama_index.finetuning` engines, in Kubernetes style.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    QUANTITY,
    ConfigMapKeyRef,
    KubeModel,
    LocalObjectReference,
    ObjectMetaLite,
    OpenObject,
    SecretKeyRef,
)
from .jobstatus import (
    TERMINAL_PHASES,
    CheckpointRef,
    CheckpointStatus,
    DatasetStatus,
    FinetuneJobStatus,
    MetricsStatus,
    ModelRef,
    Phase,
    Progress,
    RetrievalMetrics,
)

# Status models live in jobstatus.py and are re-exported here for convenience.
__all__ = [
    "TERMINAL_PHASES",
    "CheckpointRef",
    "CheckpointStatus",
    "DatasetStatus",
    "FinetuneJob",
    "FinetuneJobSpec",
    "FinetuneJobStatus",
    "MetricsStatus",
    "ModelRef",
    "Phase",
    "Progress",
    "RetrievalMetrics",
]

KIND = "FinetuneJob"
PLURAL = "finetunejobs"

STORAGE_URI = (
    r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\s]*)?|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[^\s]*)?)$"
)
DATA_URL = r"^(https?://[^\s]+|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]/[^\s]+)$"
SECRET_LIKE = ("sk-", "sk_", "Bearer ", "ghp_", "xoxb-", "AKIA")


class EngineKind(StrEnum):
    SENTENCE_TRANSFORMERS = "sentenceTransformers"
    ADAPTER = "adapter"
    OPENAI = "openai"
    GRADIENT = "gradient"


IN_CLUSTER_ENGINES = (EngineKind.SENTENCE_TRANSFORMERS, EngineKind.ADAPTER)


def _no_inline_secret(value: str | None, what: str) -> str | None:
    if value is not None and value.startswith(SECRET_LIKE):
        raise ValueError(f"{what} looks like an inline credential; reference a Secret instead")
    return value


# ---------------------------------------------------------------------------- engines


class SentenceTransformersEngine(KubeModel):
    """Full finetune of a sentence-transformers model (the reference's SentenceTransformersFinetuneEngine)."""

    model: str = Field(
        default="BAAI/bge-small-en",
        min_length=1,
        description="Model to finetune: a Hugging Face hub id, a path inside the trainer image, or "
        "pvc://CLAIM/PATH of a saved sentence-transformers model.",
    )
    batch_size: int = Field(default=10, ge=1, le=65536, description="Training batch size (pairs per step).")
    epochs: int = Field(default=2, ge=1, le=1000, description="Number of passes over the training pairs.")
    learning_rate: float = Field(default=2e-5, gt=0, le=1, description="Peak learning rate of AdamW.")
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
        default=50, ge=0, description="Evaluate on the validation set every N steps (0 disables)."
    )
    use_all_docs: bool = Field(
        default=False, description="Make one training pair per relevant document instead of only the first."
    )
    max_seq_length: int | None = Field(
        default=None,
        ge=8,
        le=32768,
        description="Truncate inputs to this many tokens (model default if unset).",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow custom modelling code shipped with the model."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="auto: bf16 (or fp16) on CUDA, fp32 on CPU."
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
        description="Frozen embedding model: hub id, image path or pvc://CLAIM/PATH.",
    )
    adapter: AdapterSpec = Field(default_factory=AdapterSpec, description="Shape of the adapter.")
    bias: bool = Field(default=False, description="Give the adapter's layers a bias term.")
    dim: int | None = Field(
        default=None, ge=1, le=65536, description="Embedding dimension (read from the model if unset)."
    )
    batch_size: int = Field(default=10, ge=1, le=65536, description="Training batch size.")
    epochs: int = Field(default=1, ge=1, le=10000, description="Number of passes over the training pairs.")
    learning_rate: float = Field(default=3e-3, gt=0, le=10, description="Learning rate of AdamW.")
    temperature: float = Field(
        default=0.05, gt=0, le=10, description="Softmax temperature of the in-batch ranking loss."
    )
    continue_from: str | None = Field(
        default=None,
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
        pattern=r"^[0-9]*\.?[0-9]+$",
        description='learning_rate_multiplier as a decimal string, e.g. "0.5"; provider default if unset.',
    )


class HostedEndpoint(KubeModel):
    """Where a hosted-API engine sends its requests."""

    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of an OpenAI-compatible API (default https://api.openai.com/v1).",
    )
    api_version: str | None = Field(
        default=None,
        max_length=64,
        description="API version for Azure-style deployments (sent as api-version).",
    )
    organization: str | None = Field(default=None, max_length=256, description="Organization id header.")


class OpenAIEngine(KubeModel):
    """A finetune proxied to the OpenAI fine-tuning API (the reference's OpenAIFinetuneEngine)."""

    base_model: str = Field(default="gpt-4o-mini-2024-07-18", min_length=1, description="Model to finetune.")
    api_key_secret_ref: SecretKeyRef = Field(description="Secret key holding the API key.")
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
        default=None, min_length=1, description="Base model to create a new adapter on, e.g. llama2-7b-chat."
    )
    model_adapter_id: str | None = Field(
        default=None, min_length=1, description="Existing model adapter to continue training."
    )
    name: str | None = Field(default=None, max_length=128, description="Name of the new adapter.")
    rank: int | None = Field(default=None, ge=1, le=1024, description="LoRA rank of the new adapter.")
    learning_rate: float | None = Field(
        default=None, gt=0, le=1, description="Learning rate of the new adapter."
    )
    batch_size: int = Field(default=10, ge=1, le=10000, description="Samples sent per fine-tune call.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many fine-tune calls.")
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the inputs.")
    host: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="API host. Gradient's public service closed in 2024: set a compatible host.",
    )
    workspace_id: str | None = Field(default=None, max_length=256, description="Workspace id.")
    access_token_secret_ref: SecretKeyRef = Field(description="Secret key holding the access token.")
    delete_adapter_on_cancel: bool = Field(
        default=False,
        description="Delete an adapter this job created when the job is deleted before finishing.",
    )

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
                    "rule": "[has(self.sentenceTransformers), has(self.adapter), has(self.openai), has(self.gradient)].filter(x, x).size() == 1",
                    "message": "set exactly one engine: sentenceTransformers, adapter, openai or gradient",
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


# ---------------------------------------------------------------------------- data


class PvcPath(KubeModel):
    """A file or directory on a PersistentVolumeClaim."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "!self.path.contains('..')", "message": "path must not contain '..'"},
            ]
        }
    }

    claim_name: str = Field(description="Name of the PersistentVolumeClaim.", pattern=DNS_SUBDOMAIN)
    path: str = Field(description="Path inside the volume.", min_length=1, pattern=r"^[^\s]+$")

    @field_validator("path")
    @classmethod
    def _no_escape(cls, value: str) -> str:
        if ".." in value:
            raise ValueError("path must not contain '..'")
        return value


class DataSource(KubeModel):
    """Where a file comes from. Set exactly one of configMap, pvc or url."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.configMap), has(self.pvc), has(self.url)].filter(x, x).size() == 1",
                    "message": "set exactly one of configMap, pvc or url",
                },
            ]
        }
    }

    config_map: ConfigMapKeyRef | None = Field(default=None, description="A key of a ConfigMap.")
    pvc: PvcPath | None = Field(default=None, description="A path on a PersistentVolumeClaim.")
    url: str | None = Field(default=None, pattern=DATA_URL, description="An http(s):// URL or an s3:// URI.")

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        n = sum(x is not None for x in (self.config_map, self.pvc, self.url))
        if n != 1:
            raise ValueError(f"set exactly one of configMap, pvc or url; got {n}")
        return self


class LLMEndpoint(KubeModel):
    """An OpenAI-compatible chat-completions endpoint (hosted API or in-cluster vLLM)."""

    base_url: str = Field(pattern=r"^https?://[^\s]+$", description="Base URL, e.g. http://vllm.llm:8000/v1.")
    model: str = Field(min_length=1, description="Model name to request.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key."
    )
    temperature: float = Field(default=0.2, ge=0, le=2, description="Sampling temperature.")
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(default=5, ge=0, le=50, description="Retries per request, with backoff.")


DEFAULT_QA_PROMPT = """\
Context information is below.

---------------------
{context_str}
---------------------

Given the context information and not prior knowledge.
generate only questions based on the below query.

You are a Teacher/ Professor. Your task is to setup \
{num_questions_per_chunk} questions for an upcoming \
quiz/examination. The questions should be diverse in nature \
across the document. Restrict the questions to the \
context information provided."
"""


class GenerateSpec(KubeModel):
    """Generate an EmbeddingQAFinetuneDataset from documents with an LLM (generate_qa_embedding_pairs)."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.chunkOverlap < self.chunkSize",
                    "message": "chunkOverlap must be smaller than chunkSize",
                },
                {
                    "rule": "self.promptTemplate.contains('{context_str}') && "
                    "self.promptTemplate.contains('{num_questions_per_chunk}')",
                    "message": "promptTemplate must contain {context_str} and {num_questions_per_chunk}",
                },
            ]
        }
    }

    documents: list[DataSource] = Field(
        min_length=1, description="Documents: text, Markdown, HTML or PDF files."
    )
    llm: LLMEndpoint = Field(description="The LLM that writes the questions.")
    questions_per_chunk: int = Field(default=2, ge=1, le=50, description="Questions asked per chunk.")
    prompt_template: str = Field(
        default=DEFAULT_QA_PROMPT,
        min_length=1,
        description="Prompt with {context_str} and {num_questions_per_chunk} placeholders.",
    )
    chunk_size: int = Field(default=1024, ge=64, le=100000, description="Chunk size in characters.")
    chunk_overlap: int = Field(
        default=128, ge=0, le=50000, description="Overlap between chunks in characters."
    )
    validation_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Fraction of generated queries kept for validation."
    )
    save_every: int = Field(default=20, ge=1, description="Save partial results every N chunks.")
    generate_only: bool = Field(
        default=False, description="Stop after generation so the dataset can be reviewed."
    )

    @field_validator("prompt_template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        for ph in ("{context_str}", "{num_questions_per_chunk}"):
            if ph not in value:
                raise ValueError(f"promptTemplate must contain {ph}")
        return value

    @model_validator(mode="after")
    def _overlap(self) -> GenerateSpec:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunkOverlap must be smaller than chunkSize")
        return self


class DatasetSpec(KubeModel):
    """Training data. Either train (and optionally validation) or generate."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.train) != has(self.generate)",
                    "message": "set exactly one of train or generate",
                },
                {
                    "rule": "!has(self.generate) || !has(self.validation)",
                    "message": "validation cannot be combined with generate",
                },
            ]
        }
    }

    format: Literal["embeddingQA", "chat", "inputs"] | None = Field(
        default=None,
        description="embeddingQA: EmbeddingQAFinetuneDataset JSON (embedding engines); chat: chat JSONL "
        "(openai); inputs: inputs JSONL (gradient). Inferred from the engine if unset.",
    )
    train: DataSource | None = Field(default=None, description="Training data.")
    validation: DataSource | None = Field(default=None, description="Validation data (held out).")
    validation_split: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Fraction of the training queries held out for evaluation when no validation is given.",
    )
    generate: GenerateSpec | None = Field(default=None, description="Generate the dataset from documents.")

    @model_validator(mode="after")
    def _source(self) -> DatasetSpec:
        if (self.train is None) == (self.generate is None):
            raise ValueError("set exactly one of train or generate")
        if self.generate is not None and self.validation is not None:
            raise ValueError("validation cannot be combined with generate (use generate.validationFraction)")
        return self


# ---------------------------------------------------------------------------- placement and policy


class OutputSpec(KubeModel):
    """Where checkpoints and the final model go."""

    storage_uri: str = Field(
        pattern=STORAGE_URI, description="pvc://CLAIM/PATH or s3://BUCKET/PATH. The job's files go below it."
    )
    checkpoint_steps: int | None = Field(
        default=None, ge=1, description="Save a checkpoint every N steps (operator default if unset)."
    )
    keep_checkpoints: int = Field(default=3, ge=1, le=100, description="How many newest checkpoints to keep.")


class S3Spec(KubeModel):
    """S3 settings for s3:// data and output URIs."""

    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="S3-compatible endpoint (MinIO, Ceph); AWS if unset.",
    )
    region: str | None = Field(default=None, description="Region.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (workload identity if unset).",
    )


class GpuSpec(KubeModel):
    """GPUs for the trainer pod."""

    count: int = Field(default=1, ge=0, le=64, description="Number of GPUs (0 runs on CPU).")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$",
        description="Extended resource name of the device plugin.",
    )


class Toleration(KubeModel):
    """A pod toleration."""

    key: str | None = Field(default=None, description="Taint key; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all if unset."
    )
    toleration_seconds: int | None = Field(default=None, description="For NoExecute: how long to stay bound.")


class ResourcesSpec(KubeModel):
    """Compute resources of the trainer pod."""

    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPUs.")
    cpu: str = Field(default="4", pattern=QUANTITY, description="CPU request and limit (a quantity).")
    memory: str = Field(
        default="16Gi", pattern=QUANTITY, description="Memory request and limit (a quantity)."
    )


class PlacementSpec(KubeModel):
    """Where and how the trainer pod runs."""

    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute resources.")
    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pod requires.")
    tolerations: list[Toleration] | None = Field(default=None, description="Taints the pod tolerates.")
    affinity: OpenObject | None = Field(default=None, description="A core/v1 Affinity, passed through.")
    priority_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="PriorityClass of the trainer pod; also orders quota queues.",
    )
    image: str | None = Field(default=None, min_length=1, description="Trainer image override.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, description="Pull secrets for the image."
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        description="Run the trainer as this ServiceAccount (e.g. for cloud storage identity) instead of the "
        "per-job one; the per-job status Role is bound to it too.",
    )


class RunPolicy(KubeModel):
    """Retries, deadlines, cleanup, suspension and queueing."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Failed attempts retried (from the newest checkpoint) before Failed. "
        "Disruptions (eviction, preemption) do not count.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail with DeadlineExceeded after this long running."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the FinetuneJob this long after it finished."
    )
    suspend: bool = Field(
        default=False, description="true stops the running attempt after a checkpoint; false resumes it."
    )
    queue_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="Queue for quota admission (Kueue LocalQueue in Kueue mode).",
    )


class FinetuneJobSpec(KubeModel):
    """Desired state of a FinetuneJob."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.engine.sentenceTransformers) || has(self.engine.adapter)) || (has(self.output) && has(self.dataset))",
                    "message": "output and dataset are required for in-cluster engines (sentenceTransformers, adapter)",
                },
                {
                    "rule": "has(self.dataset) || (has(self.engine.openai) && has(self.engine.openai.startJobId))",
                    "message": "dataset is required unless engine.openai.startJobId attaches to a remote job",
                },
                {
                    "rule": "!has(self.dataset) || !has(self.dataset.format) || (self.dataset.format == 'chat' ? "
                    "has(self.engine.openai) : self.dataset.format == 'inputs' ? has(self.engine.gradient) : "
                    "(has(self.engine.sentenceTransformers) || has(self.engine.adapter)))",
                    "message": "dataset.format does not fit the engine (embeddingQA: sentenceTransformers or adapter; "
                    "chat: openai; inputs: gradient)",
                },
                {
                    "rule": "!has(self.dataset) || !has(self.dataset.generate) || has(self.engine.sentenceTransformers) "
                    "|| has(self.engine.adapter)",
                    "message": "dataset.generate makes embedding data; use it with sentenceTransformers or adapter",
                },
            ]
        }
    }

    engine: EngineSpec = Field(description="The training engine; set exactly one.")
    dataset: DatasetSpec | None = Field(
        default=None, description="Training data (not needed to attach to a remote job)."
    )
    output: OutputSpec | None = Field(
        default=None, description="Checkpoints and model location (required for in-cluster engines)."
    )
    s3: S3Spec | None = Field(default=None, description="S3 settings for s3:// URIs.")
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Trainer pod placement.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Retries, deadlines, suspension.")
    seed: int = Field(default=42, ge=0, le=2147483647, description="Random seed of the trainer.")

    @model_validator(mode="after")
    def _coherent(self) -> FinetuneJobSpec:
        kind = self.engine.kind
        if kind in IN_CLUSTER_ENGINES:
            if self.output is None:
                raise ValueError("output is required for in-cluster engines (sentenceTransformers, adapter)")
            if self.dataset is None:
                raise ValueError("dataset is required for in-cluster engines")
        elif self.dataset is None and not (
            kind == EngineKind.OPENAI and self.engine.openai and self.engine.openai.start_job_id
        ):
            raise ValueError("dataset is required unless engine.openai.startJobId attaches to a remote job")
        if self.dataset is not None and self.dataset.format is not None:
            expected = {
                "sentenceTransformers": "embeddingQA",
                "adapter": "embeddingQA",
                "openai": "chat",
                "gradient": "inputs",
            }[kind.value]
            if self.dataset.format != expected:
                raise ValueError(
                    f"dataset.format {self.dataset.format} does not fit engine {kind.value} "
                    f"(expected {expected})"
                )
        if self.dataset is not None and self.dataset.generate is not None and kind not in IN_CLUSTER_ENGINES:
            raise ValueError(
                "dataset.generate makes embedding data; use it with sentenceTransformers or adapter"
            )
        return self

    @property
    def dataset_format(self) -> str:
        if self.dataset is not None and self.dataset.format is not None:
            return self.dataset.format
        return {"openai": "chat", "gradient": "inputs"}.get(self.engine.kind.value, "embeddingQA")


class FinetuneJob(KubeModel):
    """A finetune of an embedding model or LLM, run in-cluster on GPUs or through a hosted API."""

    model_config = KubeModel.model_config | {"extra": "ignore"}

    api_version: Literal["finetune.dev/v1alpha1"] = Field(
        default="finetune.dev/v1alpha1", description="finetune.dev/v1alpha1"
    )
    kind: Literal["FinetuneJob"] = Field(default="FinetuneJob", description="FinetuneJob")
    metadata: ObjectMetaLite = Field(default_factory=ObjectMetaLite, description="Standard object metadata.")
    spec: FinetuneJobSpec = Field(description="Desired state.")
    status: FinetuneJobStatus | None = Field(default=None, description="Observed state.")


# Fields of the spec that may change after the job started (everything else is immutable then).
MUTABLE_AFTER_START = ("runPolicy",)


def engine_summary(spec: FinetuneJobSpec) -> dict[str, Any]:
    """A short description of the engine for tables and events."""
    kind = spec.engine.kind
    eng = getattr(spec.engine, _attr(kind))
    model = (
        getattr(eng, "model", None)
        or getattr(eng, "base_model", None)
        or getattr(eng, "base_model_slug", None)
        or getattr(eng, "model_adapter_id", None)
    )
    return {"engine": kind.value, "model": model}
