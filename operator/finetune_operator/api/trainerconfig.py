"""The trainer's job config: what the operator renders (into a ConfigMap) for `python -m finetune_trainer`.

Pure pydantic. The trainer imports it from here, so operator and trainer share one definition.
Locations in it are already resolved for the pod: local paths (mounted ConfigMaps and PVCs) or
http(s):// / s3:// URLs the trainer fetches itself.
"""

from __future__ import annotations

from pydantic import Field

from .common import KubeModel
from .finetunejob import FinetuneJobSpec

CONFIG_MOUNT = "/etc/finetune"
CONFIG_FILE = "config.json"
DATA_MOUNT = "/data"
PVC_MOUNT = "/mnt/pvc"
OUTPUT_MOUNT = "/output"

# Exit codes of the trainer (the operator reads them from the terminated container state).
EXIT_OK = 0
EXIT_INVALID = 3  # invalid config or data: fail the job now, no retry
EXIT_INTERRUPTED = 4  # SIGTERM received, checkpoint saved: resumable, not a failure


class JobRef(KubeModel):
    """The FinetuneJob this config belongs to."""

    namespace: str = Field(description="Namespace of the FinetuneJob.")
    name: str = Field(description="Name of the FinetuneJob.")
    uid: str = Field(default="", description="UID of the FinetuneJob.")


class ReportSpec(KubeModel):
    """How the trainer reports progress to its FinetuneJob's status subresource."""

    api_server: str | None = Field(default=None, description="API server URL; none disables status reports.")
    token_path: str | None = Field(default=None, description="Bearer token file (per-job ServiceAccount).")
    ca_path: str | None = Field(default=None, description="CA bundle of the API server.")
    insecure: bool = Field(default=False, description="Skip TLS verification (local mode).")
    interval_seconds: float = Field(default=5.0, ge=0, description="Least time between two reports.")


class S3Access(KubeModel):
    """S3 client settings (credentials come from env vars set from a Secret)."""

    endpoint_url: str | None = None
    region: str | None = None


class TrainerConfig(KubeModel):
    """Everything one trainer run needs."""

    job: JobRef = Field(description="The owning FinetuneJob.")
    attempt: int = Field(default=1, ge=1, description="Attempt number (1-based).")
    spec: FinetuneJobSpec = Field(description="The FinetuneJob spec, as validated by the operator.")
    train: str | None = Field(default=None, description="Resolved training data location.")
    validation: str | None = Field(default=None, description="Resolved validation data location.")
    documents: list[str] = Field(
        default_factory=list, description="Resolved documents for dataset generation."
    )
    output_dir: str = Field(description="Where this job's files go: a local path or an s3:// URI.")
    output_uri: str = Field(description="The same place as users see it (pvc://CLAIM/PATH or s3://...).")
    checkpoint_steps: int = Field(default=100, ge=1, description="Checkpoint every N steps.")
    keep_checkpoints: int = Field(default=3, ge=1, description="Keep the newest K checkpoints.")
    report: ReportSpec = Field(default_factory=ReportSpec, description="Status reporting.")
    s3: S3Access | None = Field(default=None, description="S3 client settings.")
    result_path: str | None = Field(
        default="/dev/termination-log",
        description="Where the result JSON is also written (termination message).",
    )
