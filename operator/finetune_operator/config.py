"""Operator settings: one pydantic-settings object, built at start-up and kept in kopf's memo.

Every field maps one to one onto a Helm value (`helm/finetune-operator/values.yaml`, section `operator`)
and an environment variable `FINETUNE_<FIELD>` (e.g. FINETUNE_TRAINER_IMAGE).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of the operator."""

    model_config = SettingsConfigDict(env_prefix="FINETUNE_", extra="ignore", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty watches the whole cluster."
    )
    trainer_image: str = Field(
        default="ghcr.io/finetune-operator/trainer:0.1.0", description="Default trainer image."
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Pull policy of trainer pods.")
    trainer_hf_hub_offline: bool = Field(
        default=False,
        description="Set HF_HUB_OFFLINE=1 in trainer pods (models baked into the image or on a PVC).",
    )
    gpu_resource_name: str = Field(default="nvidia.com/gpu", description="Default GPU resource name.")
    resync_period_seconds: float = Field(
        default=60.0, gt=0, description="Periodic reconcile of every job (level-based recovery)."
    )
    kueue_mode: bool = Field(default=False, description="Hand jobs with spec.runPolicy.queueName to Kueue.")
    default_checkpoint_steps: int = Field(default=100, ge=1, description="Checkpoint interval when unset.")
    termination_grace_period_seconds: int = Field(
        default=120, ge=10, description="Grace period for the trainer to checkpoint."
    )
    retry_backoff_seconds: float = Field(
        default=10.0, ge=0, description="First retry delay; doubles per attempt."
    )
    retry_backoff_max_seconds: float = Field(default=600.0, ge=0, description="Longest retry delay.")
    hosted_poll_seconds: float = Field(default=15.0, gt=0, description="Poll interval of hosted jobs.")
    hosted_cancel_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long deletion waits for a remote cancel."
    )
    progress_interval_seconds: float = Field(
        default=5.0, ge=0, description="Least time between two progress reports of a trainer."
    )
    peering: bool = Field(
        default=False, description="Use kopf peering (several replicas) instead of standalone."
    )
    peering_name: str = Field(default="finetune-operator", description="kopf peering object name.")
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Port of /metrics (0 disables).")
    health_port: int = Field(default=8081, ge=0, le=65535, description="Port of /healthz (0 disables).")
    api_server: str | None = Field(
        default=None, description="API server URL (local mode); in-cluster or kubeconfig if unset."
    )
    api_insecure: bool = Field(default=False, description="Skip TLS verification (local mode only).")
    trainer_api_server: str | None = Field(
        default=None, description="API server URL given to trainer pods (default: in-cluster service)."
    )
    log_format: str = Field(default="plain", description="plain or json.")
