"""Pure, deterministic builders of the Kubernetes objects of a FinetuneJob (plain dicts, never YAML text)."""

from .common import DEFAULT_API_SERVER, SA_CA_PATH, SA_TOKEN_MOUNT, SA_TOKEN_PATH, owner_reference
from .job import (
    CONFIG_PATH,
    CONTAINER_NAME,
    LLM_API_KEY_ENV,
    POD_FAILURE_RULE_DISRUPTION,
    POD_FAILURE_RULE_INTERRUPTED,
    POD_FAILURE_RULE_INVALID,
    build_trainer_job,
    gpu_resource_name,
)
from .mounts import MountPlan, local_model_path, plan_mounts, resolve_output, resolve_source
from .rbac import build_rbac
from .service import RDZV_PORT, build_service, multi_pod
from .trainerconfig import build_config_map, build_trainer_config, render_config

__all__ = [
    "CONFIG_PATH",
    "CONTAINER_NAME",
    "DEFAULT_API_SERVER",
    "LLM_API_KEY_ENV",
    "POD_FAILURE_RULE_DISRUPTION",
    "POD_FAILURE_RULE_INTERRUPTED",
    "POD_FAILURE_RULE_INVALID",
    "RDZV_PORT",
    "SA_CA_PATH",
    "SA_TOKEN_MOUNT",
    "SA_TOKEN_PATH",
    "MountPlan",
    "build_config_map",
    "build_rbac",
    "build_service",
    "build_trainer_config",
    "build_trainer_job",
    "gpu_resource_name",
    "local_model_path",
    "multi_pod",
    "owner_reference",
    "plan_mounts",
    "render_config",
    "resolve_output",
    "resolve_source",
]
