"""Output, placement and run policy of a FinetuneJob."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import DNS_LABEL, DNS_SUBDOMAIN, QUANTITY, KubeModel, LocalObjectReference, OpenObject
from .engines import STORAGE_URI


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
