"""Deterministic names, labels and annotations of everything the operator creates for a FinetuneJob.

Pure: the same FinetuneJob always gives the same names, so a restarted operator or a replayed event finds
the objects it created before instead of creating duplicates. Every name is a DNS-1123 label (at most 63
characters): long job names are truncated and get a short hash of the full name, so two long names that
share a prefix still get different children.
"""

from __future__ import annotations

import hashlib
import re

from .api.common import GROUP

ANNOTATION_PREFIX = GROUP  # "finetune.dev": kopf's bookkeeping and our own annotations live under it
LABEL_PREFIX = GROUP

LABEL_APP_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB_NAME = f"{LABEL_PREFIX}/job-name"
LABEL_JOB_UID = f"{LABEL_PREFIX}/job-uid"
LABEL_ATTEMPT = f"{LABEL_PREFIX}/attempt"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"

APP_NAME = "finetune-trainer"
MANAGED_BY = "finetune-operator"

ANNOTATION_CONFIG_HASH = f"{ANNOTATION_PREFIX}/config-sha256"
# set by the Job controller on every pod of an Indexed Job (annotation and label), and as JOB_COMPLETION_INDEX
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"

MAX_NAME = 63
_HASH_LEN = 8
_INVALID = re.compile(r"[^a-z0-9-]+")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def dns_label(base: str, suffix: str = "") -> str:
    """`base` + `suffix` as a DNS-1123 label of at most 63 characters.

    Names that fit and are valid are kept as they are. Otherwise the base is lower-cased, invalid characters
    become '-', and it is cut so that `-<hash8>` of the original base plus the suffix fits.
    """
    name = base + suffix
    if len(name) <= MAX_NAME and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        return name
    clean = _INVALID.sub("-", base.lower()).strip("-")
    tail = f"-{_short_hash(base)}{suffix}"
    head = clean[: MAX_NAME - len(tail)].rstrip("-")
    out = (head + tail) if head else tail.lstrip("-")
    return out.rstrip("-") or _short_hash(base)


def trainer_job_name(job_name: str, attempt: int) -> str:
    """The batch/v1 Job of attempt `attempt` (1-based): `<name>-a<attempt>`."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return dns_label(job_name, f"-a{attempt}")


def trainer_service_name(job_name: str, attempt: int) -> str:
    """The headless Service of a multi-pod attempt: the Job's name, as a DNS-1035 label (a Service name
    starts with a letter), so rank 0 is `<job>-0.<service>`."""
    name = trainer_job_name(job_name, attempt)
    return name if name[0].isalpha() else dns_label(f"t-{job_name}", f"-a{attempt}")


def config_map_name(job_name: str) -> str:
    """The ConfigMap holding the trainer's config.json."""
    return dns_label(job_name, "-trainer-config")


def service_account_name(job_name: str) -> str:
    """The per-job ServiceAccount of the trainer."""
    return dns_label(job_name, "-trainer")


def role_name(job_name: str) -> str:
    """The per-job Role (and RoleBinding) that lets the trainer update its own FinetuneJob's status."""
    return dns_label(job_name, "-trainer-status")


def role_binding_name(job_name: str) -> str:
    """The per-job RoleBinding (same name as the Role)."""
    return role_name(job_name)


def owned_labels(job_name: str, job_uid: str | None) -> dict[str, str]:
    """Labels on every object created for a FinetuneJob (selectable by job name and uid)."""
    labels = {
        LABEL_APP_NAME: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB_NAME: label_value(job_name),
    }
    if job_uid:
        labels[LABEL_JOB_UID] = label_value(job_uid)
    return labels


def attempt_labels(job_name: str, job_uid: str | None, attempt: int) -> dict[str, str]:
    """Labels of a trainer Job and its pods: the owned labels plus the attempt number."""
    return {**owned_labels(job_name, job_uid), LABEL_ATTEMPT: str(attempt)}


def label_value(value: str) -> str:
    """A valid label value (<= 63 characters, alphanumeric at both ends); long values are hashed."""
    if len(value) <= MAX_NAME and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value):
        return value
    clean = re.sub(r"[^-A-Za-z0-9_.]+", "-", value)
    tail = f"-{_short_hash(value)}"
    head = clean[: MAX_NAME - len(tail)].strip("-_.")
    return (head + tail) if head else tail[1:]
