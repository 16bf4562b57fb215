"""Status of a FinetuneJob (finetune.dev/v1alpha1): computed by the operator, never accumulated."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from .common import Condition, KubeModel


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = (Phase.SUCCEEDED, Phase.FAILED)


class Progress(KubeModel):
    """Training progress as last reported by the trainer or provider."""

    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    summary: str | None = Field(default=None, description="Progress in one string, e.g. 120/500 (24%).")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0, description="Fractional epoch.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eta_seconds: int | None = Field(default=None, ge=0, description="Estimated seconds to finish training.")
    percent: int | None = Field(default=None, ge=0, le=100, description="step / totalSteps in percent.")
    stage: str | None = Field(
        default=None, description="Current trainer step (data, evaluate, train, save, ...)."
    )
    update_time: datetime | None = Field(default=None, description="When this was reported.")


class CheckpointRef(KubeModel):
    """One saved checkpoint."""

    step: int = Field(ge=0, description="Step the checkpoint was taken at.")
    uri: str | None = Field(default=None, description="Where it is stored.")
    time: datetime | None = Field(default=None, description="When it was saved.")
    model_id: str | None = Field(default=None, description="Hosted providers: the checkpoint model id.")
    loss: float | None = Field(default=None, description="Training loss at the checkpoint.")


class CheckpointStatus(KubeModel):
    """Saved checkpoints."""

    latest: CheckpointRef | None = Field(default=None, description="The newest checkpoint.")
    items: list[CheckpointRef] | None = Field(
        default=None, max_length=20, description="Newest checkpoints, bounded."
    )


class RetrievalMetrics(KubeModel):
    """Retrieval metrics on the validation set."""

    hit_rate_at1: float | None = Field(default=None, ge=0, le=1, description="Accuracy@1.")
    hit_rate_at_k: float | None = Field(default=None, ge=0, le=1, description="Accuracy@k (k below).")
    k: int | None = Field(default=None, ge=1, description="k of hitRateAtK.")
    mrr_at10: float | None = Field(default=None, ge=0, le=1, description="MRR@10.")
    ndcg_at10: float | None = Field(default=None, ge=0, le=1, description="NDCG@10.")
    queries: int | None = Field(default=None, ge=0, description="Validation queries evaluated.")


class MetricsStatus(KubeModel):
    """Evaluation before and after training."""

    before: RetrievalMetrics | None = Field(default=None, description="The base model.")
    after: RetrievalMetrics | None = Field(default=None, description="The finetuned model.")
    train_loss: float | None = Field(default=None, description="Final training loss.")
    trained_tokens: int | None = Field(
        default=None, ge=0, description="Hosted engines: billed trained tokens."
    )
    samples_per_second: float | None = Field(default=None, ge=0, description="Training throughput.")
    wall_seconds: float | None = Field(default=None, ge=0, description="Training wall time.")


class ModelRef(KubeModel):
    """The resulting model."""

    storage_uri: str | None = Field(
        default=None, description="Where the model was saved (in-cluster engines)."
    )
    format: str | None = Field(
        default=None, description="sentence-transformers, adapter, openai or gradient."
    )
    base_model: str | None = Field(default=None, description="The model that was finetuned.")
    provider_model_id: str | None = Field(default=None, description="OpenAI: the fine_tuned_model id.")
    adapter_id: str | None = Field(default=None, description="Gradient: the model adapter id.")
    name: str | None = Field(default=None, description="The model in one string: storage URI or provider id.")


class DatasetStatus(KubeModel):
    """What the job trained on."""

    train_uri: str | None = Field(default=None, description="Training data used (generated or given).")
    validation_uri: str | None = Field(default=None, description="Validation data used.")
    train_queries: int | None = Field(default=None, ge=0, description="Training queries / examples.")
    validation_queries: int | None = Field(default=None, ge=0, description="Validation queries / examples.")
    corpus_size: int | None = Field(default=None, ge=0, description="Documents in the corpus.")


class FinetuneJobStatus(KubeModel):
    """Observed state of a FinetuneJob, computed by the operator."""

    phase: Phase | None = Field(
        default=None, description="Pending, Queued, Running, Suspended, Succeeded or Failed."
    )
    engine: str | None = Field(default=None, description="The engine in use (for printer columns).")
    conditions: list[Condition] | None = Field(
        default=None, description="Admitted, Running, Succeeded, Failed, Suspended and Ready conditions."
    )
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    message: str | None = Field(default=None, description="Human-readable summary of the current state.")
    start_time: datetime | None = Field(default=None, description="When the first attempt started.")
    completion_time: datetime | None = Field(default=None, description="When the job finished.")
    attempts: int | None = Field(default=None, ge=0, description="Attempts started so far.")
    failed_attempts: int | None = Field(
        default=None, ge=0, description="Attempts that failed (not disruptions)."
    )
    progress: Progress | None = Field(default=None, description="Training progress.")
    checkpoints: CheckpointStatus | None = Field(default=None, description="Saved checkpoints.")
    metrics: MetricsStatus | None = Field(default=None, description="Evaluation and training metrics.")
    model: ModelRef | None = Field(default=None, description="The resulting model.")
    dataset: DatasetStatus | None = Field(default=None, description="The data the job trained on.")
    remote_job_id: str | None = Field(default=None, description="Hosted engines: the provider's job id.")
    queue_position: int | None = Field(
        default=None, ge=1, description="Position in the quota queue when Queued."
    )
    admitted_by: list[str] | None = Field(default=None, description="TrainingQuotas that admitted the job.")
