"""Output, placement and run policy of a FinetuneJob."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_LABEL_VALUE,
    MAX_NAME,
    MAX_QUALIFIED_NAME,
    MAX_QUANTITY,
    MAX_URI,
    QUANTITY,
    KubeModel,
    LabelValue,
    LocalObjectReference,
    OpenObject,
    QualifiedName,
    Refused,
    Url,
    no_userinfo,
)
from .engines import STORAGE_URI


class OutputSpec(KubeModel):
    """Where checkpoints and the final model go."""

    storage_uri: str = Field(
        max_length=MAX_URI,
        pattern=STORAGE_URI,
        description="pvc://CLAIM/PATH or s3://BUCKET/PATH. The job's files go below it.",
    )
    checkpoint_steps: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Save a checkpoint every N steps (operator default if unset).",
    )
    keep_checkpoints: int = Field(default=3, ge=1, le=100, description="How many newest checkpoints to keep.")


_S3_SECRET = ("{name} of a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "a Secret reference")


class S3Spec(KubeModel):
    """S3 settings for s3:// data and output URIs."""

    endpoint_url: Url | None = Field(
        default=None,
        max_length=MAX_URI,
        pattern=r"^https?://[^\s]+$",
        description="S3-compatible endpoint (MinIO, Ceph); AWS if unset.",
    )
    region: str | None = Field(default=None, max_length=MAX_LABEL_VALUE, description="Region.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (workload identity if unset).",
    )
    access_key_id: Annotated[str | None, Refused("credentialsSecretRef", *_S3_SECRET)] = None
    secret_access_key: Annotated[str | None, Refused("credentialsSecretRef", *_S3_SECRET)] = None
    session_token: Annotated[str | None, Refused("credentialsSecretRef", *_S3_SECRET)] = None

    _urls = field_validator("endpoint_url")(no_userinfo)


class GpuSpec(KubeModel):
    """GPUs for the trainer pod."""

    count: int = Field(default=1, ge=0, le=64, description="Number of GPUs (0 runs on CPU).")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=MAX_QUALIFIED_NAME,
        pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$",
        description="Extended resource name of the device plugin.",
    )


class Toleration(KubeModel):
    """A pod toleration."""

    key: str | None = Field(
        default=None, max_length=MAX_QUALIFIED_NAME, description="Taint key; empty with Exists matches all."
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=MAX_LABEL_VALUE, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all if unset."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=2147483647, description="For NoExecute: how long to stay bound."
    )


class ResourcesSpec(KubeModel):
    """Compute resources of the trainer pod."""

    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPUs.")
    cpu: str = Field(
        default="4",
        max_length=MAX_QUANTITY,
        pattern=QUANTITY,
        description="CPU request and limit (a quantity).",
    )
    memory: str = Field(
        default="16Gi",
        max_length=MAX_QUANTITY,
        pattern=QUANTITY,
        description="Memory request and limit (a quantity).",
    )


MAX_NODES = 64  # trainer pods of one job (an Indexed Job's completions)


class ElasticSpec(KubeModel):
    """torchrun's elastic node range (`--nnodes=MIN:MAX`)."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.minNodes <= self.maxNodes", "message": "minNodes must not exceed maxNodes"},
            ]
        }
    }

    min_nodes: int = Field(
        ge=1,
        le=MAX_NODES,
        description="Training goes on while at least this many trainer pods are up; with fewer, the attempt "
        "ends and the next one resumes from the newest checkpoint.",
    )
    max_nodes: int = Field(ge=1, le=MAX_NODES, description="The most trainer pods that join the training.")

    @model_validator(mode="after")
    def _ordered(self) -> ElasticSpec:
        if self.min_nodes > self.max_nodes:
            raise ValueError("minNodes must not exceed maxNodes")
        return self


class PlacementSpec(KubeModel):
    """Where and how the trainer pod runs."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.elastic) || (self.elastic.minNodes <= self.nodes && "
                    "self.nodes <= self.elastic.maxNodes)",
                    "message": "nodes must lie within elastic.minNodes..elastic.maxNodes",
                },
            ]
        }
    }

    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute resources.")
    nodes: int = Field(
        default=1,
        ge=1,
        le=MAX_NODES,
        description="Number of trainer pods (one Indexed Job, torch.distributed over a headless Service). The "
        "world size is nodes x processes per pod (resources.gpu.count, or 1 on CPU); the engine's batchSize "
        "stays the global batch and must divide by the world size.",
    )
    elastic: ElasticSpec | None = Field(
        default=None,
        description="Elastic range of trainer pods (torchrun --nnodes=MIN:MAX); unset: exactly `nodes`.",
    )
    node_selector: dict[QualifiedName, LabelValue] | None = Field(
        default=None, max_length=64, description="Node labels the pod requires."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Taints the pod tolerates."
    )
    affinity: OpenObject | None = Field(
        default=None,
        json_schema_extra={"maxProperties": 3},
        description="A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), passed through.",
    )
    priority_class_name: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN,
        description="PriorityClass of the trainer pod; also orders quota queues.",
    )
    image: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Trainer image override."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Pull secrets for the image."
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN,
        description="Run the trainer as this ServiceAccount (e.g. for cloud storage identity) instead of the "
        "per-job one; the per-job status Role is bound to it too.",
    )

    @model_validator(mode="after")
    def _nodes_in_range(self) -> PlacementSpec:
        if self.elastic is not None and not self.elastic.min_nodes <= self.nodes <= self.elastic.max_nodes:
            raise ValueError("nodes must lie within elastic.minNodes..elastic.maxNodes")
        return self

    @property
    def procs_per_node(self) -> int:
        """Trainer processes in each pod: one per GPU, one on CPU."""
        return max(1, self.resources.gpu.count)

    @property
    def world_size(self) -> int:
        """torch.distributed world size at `nodes` pods."""
        return self.nodes * self.procs_per_node

    @property
    def distributed(self) -> bool:
        """More than one pod, or more than one process in the pod: launched by torchrun."""
        return self.world_size > 1 or self.elastic is not None


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
        default=None, ge=1, le=2147483647, description="Fail with DeadlineExceeded after this long running."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=2147483647, description="Delete the FinetuneJob this long after it finished."
    )
    suspend: bool = Field(
        default=False, description="true stops the running attempt after a checkpoint; false resumes it."
    )
    queue_name: str | None = Field(
        default=None,
        max_length=MAX_LABEL_VALUE,
        pattern=DNS_LABEL,
        description="Queue for quota admission (Kueue LocalQueue in Kueue mode).",
    )
