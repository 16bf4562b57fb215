"""The FinetuneJob API (finetune.dev/v1alpha1).

One engine per job, chosen by setting exactly one of `spec.engine.*`. Field names and defaults
follow LlamaIndex's `llama_index.finetuning` engines, in Kubernetes style. The parts live in
engines.py, dataset.py, placement.py and jobstatus.py; this module assembles the object and re-exports them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .common import KubeModel, ObjectMetaLite
from .dataset import (
    DATA_URL,
    DEFAULT_QA_PROMPT,
    DatasetSpec,
    DataSource,
    GenerateSpec,
    LLMEndpoint,
    PvcPath,
)
from .engines import (
    EMBEDDING_ENGINES,
    IN_CLUSTER_ENGINES,
    STORAGE_URI,
    AdapterEngine,
    AdapterSpec,
    EngineKind,
    EngineSpec,
    GradientEngine,
    HostedEndpoint,
    OpenAIEngine,
    OpenAIHyperparameters,
    SentenceTransformersEngine,
    _attr,
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
from .placement import (
    GpuSpec,
    OutputSpec,
    PlacementSpec,
    ResourcesSpec,
    RunPolicy,
    S3Spec,
    Toleration,
)

__all__ = [
    "DATA_URL",
    "DEFAULT_QA_PROMPT",
    "EMBEDDING_ENGINES",
    "IN_CLUSTER_ENGINES",
    "STORAGE_URI",
    "TERMINAL_PHASES",
    "AdapterEngine",
    "AdapterSpec",
    "CheckpointRef",
    "CheckpointStatus",
    "DataSource",
    "DatasetSpec",
    "DatasetStatus",
    "EngineKind",
    "EngineSpec",
    "FinetuneJob",
    "FinetuneJobSpec",
    "FinetuneJobStatus",
    "GenerateSpec",
    "GpuSpec",
    "GradientEngine",
    "HostedEndpoint",
    "LLMEndpoint",
    "MetricsStatus",
    "ModelRef",
    "OpenAIEngine",
    "OpenAIHyperparameters",
    "OutputSpec",
    "Phase",
    "PlacementSpec",
    "Progress",
    "PvcPath",
    "ResourcesSpec",
    "RetrievalMetrics",
    "RunPolicy",
    "S3Spec",
    "SentenceTransformersEngine",
    "Toleration",
]

KIND = "FinetuneJob"
PLURAL = "finetunejobs"


class FinetuneJobSpec(KubeModel):
    """Desired state of a FinetuneJob."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.engine.sentenceTransformers) || has(self.engine.adapter) || has(self.engine.llm)) "
                    "|| (has(self.output) && has(self.dataset))",
                    "message": "output and dataset are required for in-cluster engines (sentenceTransformers, adapter, llm)",
                },
                {
                    "rule": "has(self.dataset) || (has(self.engine.openai) && has(self.engine.openai.startJobId))",
                    "message": "dataset is required unless engine.openai.startJobId attaches to a remote job",
                },
                {
                    "rule": "!has(self.dataset) || !has(self.dataset.format) || (self.dataset.format == 'chat' ? "
                    "(has(self.engine.openai) || (has(self.engine.llm) && self.engine.llm.method != 'dpo')) : "
                    "self.dataset.format == 'preference' ? (has(self.engine.llm) && self.engine.llm.method == 'dpo') : "
                    "self.dataset.format == 'inputs' ? has(self.engine.gradient) : "
                    "(has(self.engine.sentenceTransformers) || has(self.engine.adapter)))",
                    "message": "dataset.format does not fit the engine (embeddingQA: sentenceTransformers or adapter; "
                    "chat: openai or llm method sft; preference: llm method dpo; inputs: gradient)",
                },
                {
                    "rule": "!has(self.engine.llm) || self.engine.llm.quantization != '4bit' || !has(self.placement) "
                    "|| !has(self.placement.resources) || !has(self.placement.resources.gpu) "
                    "|| !has(self.placement.resources.gpu.count) || self.placement.resources.gpu.count > 0",
                    "message": "engine.llm.quantization 4bit needs a GPU: set placement.resources.gpu.count > 0",
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
                raise ValueError(
                    "output is required for in-cluster engines (sentenceTransformers, adapter, llm)"
                )
            if self.dataset is None:
                raise ValueError("dataset is required for in-cluster engines")
        elif self.dataset is None and not (
            kind == EngineKind.OPENAI and self.engine.openai and self.engine.openai.start_job_id
        ):
            raise ValueError("dataset is required unless engine.openai.startJobId attaches to a remote job")
        if self.dataset is not None and self.dataset.format is not None:
            expected = self._default_format()
            if self.dataset.format != expected:
                raise ValueError(
                    f"dataset.format {self.dataset.format} does not fit engine {kind.value} "
                    f"(expected {expected})"
                )
        llm = self.engine.llm
        if llm is not None and llm.quantization == "4bit" and self.placement.resources.gpu.count == 0:
            raise ValueError(
                "engine.llm.quantization 4bit needs a GPU: set placement.resources.gpu.count > 0 "
                "(bitsandbytes 4-bit runs on CUDA only)"
            )
        if self.dataset is not None and self.dataset.generate is not None and kind not in EMBEDDING_ENGINES:
            raise ValueError(
                "dataset.generate makes embedding data; use it with sentenceTransformers or adapter"
            )
        world = self.placement.world_size
        st = self.engine.sentence_transformers
        if world > 1 and st is not None and st.batch_size % world:
            raise ValueError(
                f"engine.sentenceTransformers.batchSize {st.batch_size} is the global batch: it must divide by "
                f"the world size {world} (placement.nodes x resources.gpu.count)"
            )
        if self.placement.distributed and kind not in IN_CLUSTER_ENGINES:
            raise ValueError("placement.nodes and placement.elastic apply to in-cluster engines only")
        return self

    @property
    def dataset_format(self) -> str:
        if self.dataset is not None and self.dataset.format is not None:
            return self.dataset.format
        return self._default_format()

    def _default_format(self) -> str:
        """The data format the engine takes (llm: chat for sft, preference for dpo)."""
        if self.engine.llm is not None:
            return "preference" if self.engine.llm.method == "dpo" else "chat"
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
