"""Least privilege for the trainer: a per-job ServiceAccount that may read and update only its own
FinetuneJob's status (a Role limited by resourceNames), all owned by the FinetuneJob."""

from __future__ import annotations

from typing import Any

from ..api.common import GROUP
from ..api.finetunejob import PLURAL, FinetuneJob
from ..config import Settings
from ..naming import role_binding_name, role_name, service_account_name
from .common import child_metadata
from .mounts import job_namespace


def build_rbac(job: FinetuneJob, settings: Settings) -> list[dict[str, Any]]:
    """[ServiceAccount, Role, RoleBinding] for the trainer of this job (in-cluster and hosted alike are fine,
    but only in-cluster engines need them)."""
    del settings
    name = job.metadata.name
    ns = job_namespace(job)
    sa = service_account_name(name)
    subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    user_sa = job.spec.placement.service_account_name
    if user_sa and user_sa != sa:
        subjects.append({"kind": "ServiceAccount", "name": user_sa, "namespace": ns})
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": child_metadata(job, sa),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": child_metadata(job, role_name(name)),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": [f"{PLURAL}/status"],
                    "resourceNames": [name],
                    "verbs": ["get", "patch"],
                },
                {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [name], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": child_metadata(job, role_binding_name(name)),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name(name)},
            "subjects": subjects,
        },
    ]
