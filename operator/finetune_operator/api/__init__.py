"""Typed API of finetune.dev/v1alpha1 (pure pydantic models)."""

from .common import API_VERSION, GROUP, VERSION, Condition, SecretKeyRef
from .errors import SpecError, format_validation_error, parse_job, parse_quota
from .finetunejob import EngineKind, FinetuneJob, FinetuneJobSpec
from .jobstatus import FinetuneJobStatus, Phase
from .trainingquota import TrainingQuota, TrainingQuotaSpec

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "EngineKind",
    "FinetuneJob",
    "FinetuneJobSpec",
    "FinetuneJobStatus",
    "Phase",
    "SecretKeyRef",
    "SpecError",
    "TrainingQuota",
    "TrainingQuotaSpec",
    "format_validation_error",
    "parse_job",
    "parse_quota",
]
