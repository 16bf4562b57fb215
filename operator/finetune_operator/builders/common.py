"""Metadata shared by every object the operator creates for a FinetuneJob."""

from __future__ import annotations

from typing import Any

from ..api.common import API_VERSION
from ..api.finetunejob import KIND, FinetuneJob
from ..naming import owned_labels
from .mounts import job_namespace

SA_TOKEN_MOUNT = "/var/run/secrets/finetune.dev/serviceaccount"
SA_TOKEN_FILE = "token"
SA_CA_FILE = "ca.crt"
SA_TOKEN_PATH = f"{SA_TOKEN_MOUNT}/{SA_TOKEN_FILE}"
SA_CA_PATH = f"{SA_TOKEN_MOUNT}/{SA_CA_FILE}"
SA_TOKEN_EXPIRATION_SECONDS = 3600
DEFAULT_API_SERVER = "https://kubernetes.default.svc"


def owner_reference(job: FinetuneJob) -> dict[str, Any]:
    """The controller ownerReference that makes a child go away with its FinetuneJob."""
    if not job.metadata.uid:
        raise ValueError("metadata.uid is required to own objects (was the FinetuneJob read from the API?)")
    if not job.metadata.name:
        raise ValueError("metadata.name is required")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(job: FinetuneJob, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """metadata of a child object: name, namespace, labels and the owner reference."""
    return {
        "name": name,
        "namespace": job_namespace(job),
        "labels": labels if labels is not None else owned_labels(job.metadata.name, job.metadata.uid),
        "ownerReferences": [owner_reference(job)],
    }
