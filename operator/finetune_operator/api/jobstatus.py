"""Status of a FinetuneJob (finetune.dev/v1alpha1): computed by the operator, never accumulated."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from .common import MAX_ID, MAX_STATUS_URI, MAX_URI, Condition, KubeModel, Message, Name


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
    summary: str | None = Field(
        default=None, max_length=256, description="Progress in one string, e.g. 120/500 (24%)."
    )
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0, description="Fractional epoch.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eta_seconds: int | None = Field(default=None, ge=0, description="Estimated seconds to finish training.")
    percent: int | None = Field(default=None, ge=0, le=100, description="step / totalSteps in percent.")
    stage: str | None = Field(
        default=None, max_length=64, description="Current trainer step (data, evaluate, train, save, ...)."
    )
    update_time: datetime | None = Field(default=None, description="When this was reported.")


class CheckpointRef(KubeModel):
    """One saved checkpoint."""

    step: int = Field(ge=0, description="Step the checkpoint was taken at.")
    uri: str | None = Field(default=None, max_length=MAX_STATUS_URI, description="Where it is stored.")
    time: datetime | None = Field(default=None, description="When it was saved.")
    model_id: str | None = Field(
        default=None, max_length=MAX_ID, description="Hosted providers: the checkpoint model id."
    )
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
    loss: float | None = Field(
        default=None, ge=0, le=1e6, description="llm engine: mean loss on the validation assistant tokens."
    )
    perplexity: float | None = Field(
        default=None, ge=0, le=1e300, description="llm engine: exp(loss) on the validation assistant tokens."
    )
    preference_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="llm engine, method dpo: fraction of validation pairs whose preferred output the model "
        "scores higher than the non-preferred one.",
    )
    preference_margin: float | None = Field(
        default=None,
        ge=-1e9,
        le=1e9,
        description="llm engine, method dpo: mean log-probability margin of the preferred over the non-preferred "
        "output.",
    )
    examples: int | None = Field(default=None, ge=0, description="llm engine: validation examples evaluated.")


class CurvePoint(KubeModel):
    """One validation evaluation during training."""

    step: int = Field(ge=0, le=1_000_000_000, description="Optimizer step (0: the base model).")
    mrr_at10: float | None = Field(default=None, ge=0, le=1, description="MRR@10 on the validation set.")
    ndcg_at10: float | None = Field(default=None, ge=0, le=1, description="NDCG@10 (when it selects).")
    hit_rate_at1: float | None = Field(default=None, ge=0, le=1, description="Accuracy@1 (when it selects).")
    hit_rate_at_k: float | None = Field(default=None, ge=0, le=1, description="Accuracy@k (when it selects).")


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
    best_step: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Step of the published model: the best validation evaluation (0: the base model).",
    )
    selection_metric: str | None = Field(
        default=None, max_length=32, description="The validation metric that picked the best step."
    )
    stopped_early: bool | None = Field(
        default=None, description="Training stopped before its last step (evaluation.patience ran out)."
    )
    model_improved: bool | None = Field(
        default=None, description="The published model beats the base model on the validation set."
    )
    validation_curve: list[CurvePoint] | None = Field(
        default=None, max_length=30, description="Validation metric by step (first, best and last kept)."
    )
    mrr_at10_change: str | None = Field(
        default=None,
        max_length=32,
        description="MRR@10 before and after training in one short string, e.g. 0.648→0.825 (the MRR@10 "
        "printer column; the numbers themselves are in before and after).",
    )

    def with_mrr_change(self) -> MetricsStatus:
        """This status with mrrAt10Change set from before/after (3 decimals), or unset without an after."""
        after = self.after.mrr_at10 if self.after else None
        before = self.before.mrr_at10 if self.before else None
        change = None
        if after is not None:
            change = f"{after:.3f}" if before is None else f"{before:.3f}→{after:.3f}"
        return self.model_copy(update={"mrr_at10_change": change})


class ModelRef(KubeModel):
    """The resulting model."""

    storage_uri: str | None = Field(
        default=None, max_length=MAX_STATUS_URI, description="Where the model was saved (in-cluster engines)."
    )
    format: str | None = Field(
        default=None, max_length=64, description="sentence-transformers, adapter, openai or gradient."
    )
    base_model: str | None = Field(
        default=None, max_length=MAX_URI, description="The model that was finetuned."
    )
    provider_model_id: str | None = Field(
        default=None, max_length=MAX_ID, description="OpenAI: the fine_tuned_model id."
    )
    adapter_id: str | None = Field(
        default=None, max_length=MAX_ID, description="Gradient: the model adapter id."
    )
    name: str | None = Field(
        default=None,
        max_length=MAX_STATUS_URI,
        description="The model in one string: storage URI or provider id.",
    )


class DatasetStatus(KubeModel):
    """What the job trained on."""

    train_uri: str | None = Field(
        default=None, max_length=MAX_STATUS_URI, description="Training data used (generated or given)."
    )
    validation_uri: str | None = Field(
        default=None, max_length=MAX_STATUS_URI, description="Validation data used."
    )
    train_queries: int | None = Field(default=None, ge=0, description="Training queries / examples.")
    validation_queries: int | None = Field(default=None, ge=0, description="Validation queries / examples.")
    corpus_size: int | None = Field(default=None, ge=0, description="Documents in the corpus.")
    validation_source: str | None = Field(
        default=None,
        max_length=32,
        description="given: the spec's validation set; heldOutByDocument: a split of the training data by "
        "document (no query of a held-out document was trained on).",
    )


class NodeStatus(KubeModel):
    """One trainer pod of a multi-pod attempt (its Indexed Job's completion index)."""

    index: int = Field(ge=0, le=63, description="Completion index of the pod; index 0 hosts the rendezvous.")
    phase: str | None = Field(
        default=None, max_length=16, description="Pod phase: Pending, Running, Succeeded or Failed."
    )
    ready: bool = Field(
        default=False, description="Whether the pod's trainer container is running and ready."
    )


class DistributedStatus(KubeModel):
    """The torch.distributed shape of the job and, while it starts, which trainer pods are up."""

    world_size: int = Field(
        ge=1, le=4096, description="Trainer processes: placement.nodes x processes per pod."
    )
    nodes: int = Field(ge=1, le=64, description="Trainer pods (placement.nodes).")
    processes_per_node: int = Field(ge=1, le=64, description="Processes per pod: one per GPU, one on CPU.")
    nodes_ready: int | None = Field(
        default=None, ge=0, le=64, description="Trainer pods of the current attempt that are ready."
    )
    pods: list[NodeStatus] | None = Field(
        default=None, max_length=64, description="The current attempt's trainer pods, by index."
    )


class FinetuneJobStatus(KubeModel):
    """Observed state of a FinetuneJob, computed by the operator."""

    phase: Phase | None = Field(
        default=None, description="Pending, Queued, Running, Suspended, Succeeded or Failed."
    )
    engine: str | None = Field(
        default=None, max_length=64, description="The engine in use (for printer columns)."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        description="Admitted, Running, Succeeded, Failed, Suspended and Ready conditions.",
    )
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    message: Message | None = Field(default=None, description="Human-readable summary of the current state.")
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
    remote_job_id: str | None = Field(
        default=None, max_length=MAX_ID, description="Hosted engines: the provider's job id."
    )
    queue_position: int | None = Field(
        default=None, ge=1, description="Position in the quota queue when Queued."
    )
    admitted_by: list[Name] | None = Field(
        default=None, max_length=64, description="TrainingQuotas that admitted the job."
    )
    distributed: DistributedStatus | None = Field(
        default=None, description="Multi-GPU / multi-node jobs: world size and per-pod readiness."
    )
