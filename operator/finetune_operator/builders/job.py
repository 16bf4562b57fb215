"""The batch/v1 Job of one attempt of an in-cluster FinetuneJob.

Retries belong to the operator, not to the Job controller: ``backoffLimit: 0`` makes every pod failure end
the attempt, and the operator decides whether to start the next attempt (which resumes from the newest
checkpoint), how long to back off, and whether the failure counts against ``spec.runPolicy.backoffLimit``.

``podFailurePolicy`` therefore never uses ``Ignore``: with ``Ignore`` on ``DisruptionTarget`` the Job
controller would replace an evicted pod by itself, inside the same attempt, out of the operator's sight
(no attempt count, no suspend or deadline handling between the two pods). Instead every rule is ``FailJob``
(the outcome is the same as plain ``backoffLimit: 0``), so the Job's ``Failed`` condition records *why* the
attempt ended even after its pod was garbage-collected: reason ``PodFailurePolicy`` and a message naming the
rule index, one of the ``POD_FAILURE_RULE_*`` constants below. The pod's own state is still read first.

``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished`` are not set: the operator tracks the deadline across
attempts and deletes children through ownerReferences.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..api.finetunejob import FinetuneJob
from ..api.trainerconfig import (
    CONFIG_FILE,
    CONFIG_MOUNT,
    DATA_MOUNT,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    OUTPUT_MOUNT,
    PVC_MOUNT,
    TrainerConfig,
)
from ..config import Settings
from ..naming import (
    ANNOTATION_CONFIG_HASH,
    LABEL_KUEUE_QUEUE,
    attempt_labels,
    config_map_name,
    service_account_name,
    trainer_job_name,
    trainer_service_name,
)
from .common import SA_CA_FILE, SA_TOKEN_EXPIRATION_SECONDS, SA_TOKEN_FILE, SA_TOKEN_MOUNT, child_metadata
from .mounts import OUTPUT_VOLUME, MountPlan, config_map_volume_name, plan_mounts
from .service import LAUNCHER_MODULE, multi_pod, torchrun_args
from .trainerconfig import build_trainer_config, render_config, require_in_cluster

CONTAINER_NAME = "trainer"
CONFIG_PATH = f"{CONFIG_MOUNT}/{CONFIG_FILE}"
RUN_AS = 65532
TMP_SIZE = "2Gi"
CACHE_SIZE = "20Gi"
SHM_SIZE = "2Gi"
LLM_API_KEY_ENV = "FINETUNE_LLM_API_KEY"
ATTEMPT_ENV = "FINETUNE_ATTEMPT"

POD_FAILURE_RULE_DISRUPTION = 0  # evicted / preempted / node lost: not counted against backoffLimit
POD_FAILURE_RULE_INVALID = 1  # exit 3: invalid config or data, fail the FinetuneJob now
POD_FAILURE_RULE_INTERRUPTED = 2  # exit 4: SIGTERM after a checkpoint, resumable


def _pod_failure_policy(elastic: bool = False) -> dict[str, Any]:
    # elastic multi-pod jobs: a disrupted pod is replaced by the Job controller (same index and hostname)
    # and rejoins torchrun's rendezvous while the others keep training; everything else ends the attempt
    disruption = "Ignore" if elastic else "FailJob"
    return {
        "rules": [
            {"action": disruption, "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": [EXIT_INVALID]},
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [EXIT_INTERRUPTED],
                },
            },
        ]
    }


def _launch(job: FinetuneJob, settings: Settings, attempt: int) -> dict[str, Any]:
    """command/args of a distributed trainer: torchrun (through finetune_trainer.distributed, which runs
    torchrun's own main and keeps the workers' exit code) launching `-m finetune_trainer` once per GPU."""
    if not job.spec.placement.distributed:
        return {}
    grace = settings.termination_grace_period_seconds
    return {
        "command": ["python", "-m", LAUNCHER_MODULE],
        "args": [*torchrun_args(job, attempt, grace), "-m", "finetune_trainer", "--config", CONFIG_PATH],
    }


def _completions(job: FinetuneJob) -> dict[str, Any]:
    """One pod: `backoffLimit: 0`. Several: an Indexed Job, one index per node, where any failed index
    (`backoffLimitPerIndex: 0`, `maxFailedIndexes: 0`) or FailJob rule ends the attempt."""
    nodes = job.spec.placement.nodes
    if not multi_pod(job):
        return {"parallelism": 1, "completions": 1, "backoffLimit": 0}
    return {
        "completionMode": "Indexed",
        "parallelism": nodes,
        "completions": nodes,
        "backoffLimitPerIndex": 0,
        "maxFailedIndexes": 0,
    }


def gpu_resource_name(job: FinetuneJob, settings: Settings) -> str:
    """The GPU resource: the spec's when set explicitly, else the operator's default."""
    gpu = job.spec.placement.resources.gpu
    return gpu.resource_name if "resource_name" in gpu.model_fields_set else settings.gpu_resource_name


def _resources(job: FinetuneJob, settings: Settings) -> dict[str, Any]:
    res = job.spec.placement.resources
    amounts: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpu.count > 0:
        amounts[gpu_resource_name(job, settings)] = str(res.gpu.count)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _env(job: FinetuneJob, settings: Settings, attempt: int) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": ATTEMPT_ENV, "value": str(attempt)},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/cache/hf"},
        {"name": "XDG_CACHE_HOME", "value": "/cache"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if settings.trainer_hf_hub_offline:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    s3 = job.spec.s3
    if s3 is not None:
        if s3.endpoint_url:
            env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
        if s3.region:
            env += [
                {"name": "AWS_REGION", "value": s3.region},
                {"name": "AWS_DEFAULT_REGION", "value": s3.region},
            ]
        if s3.credentials_secret_ref is not None:
            secret = s3.credentials_secret_ref.name
            env += [
                _secret_env("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"),
                _secret_env("AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY"),
                _secret_env("AWS_SESSION_TOKEN", secret, "AWS_SESSION_TOKEN", optional=True),
            ]
    ds = job.spec.dataset
    if ds is not None and ds.generate is not None and ds.generate.llm.api_key_secret_ref is not None:
        ref = ds.generate.llm.api_key_secret_ref
        env.append(_secret_env(LLM_API_KEY_ENV, ref.name, ref.key))
    return env


def _volumes(job: FinetuneJob, plan: MountPlan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    name = job.metadata.name
    gpus = job.spec.placement.resources.gpu.count
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": config_map_name(name),
                "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}],
            },
        },
        {
            "name": "sa-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": SA_TOKEN_FILE,
                            "expirationSeconds": SA_TOKEN_EXPIRATION_SECONDS,
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": SA_CA_FILE}],
                        }
                    },
                ]
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        {"name": "cache", "emptyDir": {"sizeLimit": CACHE_SIZE}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "sa-token", "mountPath": SA_TOKEN_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/cache"},
    ]
    if gpus > 0:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    for cm, keys in plan.config_maps.items():
        vol = config_map_volume_name(cm)
        volumes.append(
            {"name": vol, "configMap": {"name": cm, "items": [{"key": k, "path": k} for k in keys]}}
        )
        mounts.append({"name": vol, "mountPath": f"{DATA_MOUNT}/{cm}", "readOnly": True})
    if plan.output_claim is not None:
        volumes.append(
            {
                "name": OUTPUT_VOLUME,
                "persistentVolumeClaim": {"claimName": plan.output_claim, "readOnly": False},
            }
        )
        mounts.append({"name": OUTPUT_VOLUME, "mountPath": OUTPUT_MOUNT})
    for claim in plan.claims:
        vol = plan.claim_volume(claim)
        if claim != plan.output_claim:
            volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": vol, "mountPath": f"{PVC_MOUNT}/{claim}", "readOnly": True})
    return volumes, mounts


def build_trainer_job(
    job: FinetuneJob, settings: Settings, attempt: int, config: TrainerConfig | None = None
) -> dict[str, Any]:
    """The batch/v1 Job of attempt `attempt`. Raises ValueError for hosted engines."""
    require_in_cluster(job)
    if config is None:
        config = build_trainer_config(job, settings, attempt)
    spec = job.spec
    placement = spec.placement
    name = job.metadata.name
    labels = attempt_labels(name, job.metadata.uid, attempt)
    job_labels = dict(labels)
    kueue = settings.kueue_mode and spec.run_policy.queue_name is not None
    if kueue and spec.run_policy.queue_name is not None:
        job_labels[LABEL_KUEUE_QUEUE] = spec.run_policy.queue_name
    volumes, mounts = _volumes(job, plan_mounts(spec))
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": placement.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["--config", CONFIG_PATH],
        "env": _env(job, settings, attempt),
        **_launch(job, settings, attempt),
        "resources": _resources(job, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": placement.service_account_name or service_account_name(name),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(placement.node_selector.items()))
    if placement.tolerations:
        pod_spec["tolerations"] = [t.to_json() for t in placement.tolerations]
    if placement.affinity is not None:
        pod_spec["affinity"] = placement.affinity.model_dump(mode="json")
    if placement.priority_class_name:
        pod_spec["priorityClassName"] = placement.priority_class_name
    if placement.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in placement.image_pull_secrets]
    indexed = multi_pod(job)
    if indexed:
        pod_spec["subdomain"] = trainer_service_name(name, attempt)
    config_hash = hashlib.sha256(render_config(config).encode()).hexdigest()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(job, trainer_job_name(name, attempt), job_labels),
        "spec": {
            **_completions(job),
            "podFailurePolicy": _pod_failure_policy(indexed and placement.elastic is not None),
            "suspend": kueue,
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_CONFIG_HASH: config_hash}},
                "spec": pod_spec,
            },
        },
    }
