"""What the operator is allowed to do in a cluster: the single source of truth of its RBAC.

Pure data. The Helm chart's RBAC templates must grant exactly these rules (checked by
`tests/unit/test_chart_rbac.py`), and the integration tests can check that every API call the operator
really made (`KubeClient.calls`, see `finetune_operator.kube`) is covered:

    missing = uncovered(client.calls, peering=False, kueue=False)
    assert not missing

Rules are split like the chart's roles:

* framework: what kopf itself needs (watching the resources it handles, finalizers and annotations,
  events, resource discovery, peering between replicas);
* application: what the reconcile logic needs (trainer Jobs and their children, per-job RBAC for the
  trainer's status updates, FinetuneJob and TrainingQuota status, Secrets of hosted engines, priority
  classes for quota ordering, Kueue workloads).

A namespaced resource is granted per watched namespace (a Role) in namespaced mode and by a ClusterRole
in cluster-wide mode; cluster-scoped resources always need a ClusterRole.

Note on RBAC escalation prevention: the operator creates a per-job Role granting `get`/`patch` on
`finetunejobs/status` (limited by resourceNames) and binds it to the trainer's ServiceAccount. The API
server allows this only if the operator holds those permissions itself, so they are listed here even if the
operator never called `get` on the status subresource.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .api.common import GROUP

Part = Literal["framework", "application"]
Feature = Literal["always", "peering", "kueue"]

CORE = ""
BATCH = "batch"
RBAC = "rbac.authorization.k8s.io"
APIEXT = "apiextensions.k8s.io"
SCHEDULING = "scheduling.k8s.io"
KOPF = "kopf.dev"
KUEUE = "kueue.x-k8s.io"


@dataclass(frozen=True)
class Rule:
    """One RBAC rule of the operator (no wildcards: every verb and resource is explicit)."""

    part: Part
    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    cluster_scoped: bool
    why: str
    feature: Feature = "always"
    # Only in one mode of peering: cluster-wide operators use ClusterKopfPeering, namespaced ones KopfPeering.
    clusterwide_only: bool = False
    namespaced_only: bool = False


@dataclass(frozen=True, order=True)
class Permission:
    """One (apiGroup, resource[/subresource], verb) triple, as `kubectl auth can-i` sees it."""

    group: str
    resource: str
    verb: str


RULES: tuple[Rule, ...] = (
    # ------------------------------------------------------------------ framework (kopf)
    Rule(
        "framework",
        GROUP,
        ("finetunejobs",),
        ("list", "watch", "patch"),
        False,
        "kopf watches FinetuneJobs and patches its finalizer and progress annotations",
    ),
    Rule(
        "framework",
        GROUP,
        ("trainingquotas",),
        ("list", "watch", "patch"),
        True,
        "kopf watches TrainingQuotas and patches its annotations",
    ),
    Rule(
        "framework",
        CORE,
        ("events",),
        ("create", "patch"),
        False,
        "kopf and the operator post Events on the objects they handle",
    ),
    Rule(
        "framework",
        CORE,
        ("namespaces",),
        ("get", "list", "watch"),
        True,
        "kopf observes namespaces; quotas select namespaces by label",
    ),
    Rule(
        "framework",
        APIEXT,
        ("customresourcedefinitions",),
        ("list", "watch"),
        True,
        "kopf observes the CRDs it serves (resource discovery at run time)",
    ),
    Rule(
        "framework",
        KOPF,
        ("clusterkopfpeerings",),
        ("get", "list", "watch", "patch"),
        True,
        "kopf peering between replicas (cluster-wide operator)",
        feature="peering",
        clusterwide_only=True,
    ),
    Rule(
        "framework",
        KOPF,
        ("kopfpeerings",),
        ("get", "list", "watch", "patch"),
        False,
        "kopf peering between replicas (namespaced operator)",
        feature="peering",
        namespaced_only=True,
    ),
    # ------------------------------------------------------------------ application
    Rule(
        "application",
        GROUP,
        ("finetunejobs",),
        ("get", "list", "patch", "delete"),
        False,
        "read FinetuneJobs (quota usage); annotate admission decisions; delete after ttlSecondsAfterFinished",
    ),
    Rule(
        "application",
        GROUP,
        ("finetunejobs/status",),
        ("get", "patch"),
        False,
        "write FinetuneJob status; held so the per-job trainer Role may grant it (escalation prevention)",
    ),
    Rule("application", GROUP, ("trainingquotas",), ("get", "list"), True, "read TrainingQuotas (admission)"),
    Rule(
        "application", GROUP, ("trainingquotas/status",), ("get", "patch"), True, "write TrainingQuota usage"
    ),
    Rule(
        "application",
        BATCH,
        ("jobs",),
        ("create", "get", "list", "watch", "patch", "delete"),
        False,
        "one trainer Job per attempt; patched to suspend, deleted on cleanup",
    ),
    Rule(
        "application",
        CORE,
        ("pods",),
        ("get", "list", "watch", "delete"),
        False,
        "observe trainer pods (phase, termination message, disruptions); delete stuck pods",
    ),
    Rule(
        "application",
        CORE,
        ("configmaps",),
        ("create", "get", "list", "watch", "patch", "delete"),
        False,
        "the trainer's rendered config",
    ),
    Rule(
        "application",
        CORE,
        ("services",),
        ("create", "get"),
        False,
        "the headless Service of a multi-pod attempt (rank 0's DNS name); deleted with its FinetuneJob",
    ),
    Rule(
        "application",
        CORE,
        ("serviceaccounts",),
        ("create", "get", "list", "watch", "delete"),
        False,
        "the per-job trainer ServiceAccount",
    ),
    Rule(
        "application",
        RBAC,
        ("roles", "rolebindings"),
        ("create", "get", "list", "watch", "delete"),
        False,
        "the per-job Role and RoleBinding that let a trainer patch its own FinetuneJob status",
    ),
    Rule(
        "application",
        CORE,
        ("secrets",),
        ("get",),
        False,
        "hosted engines (openai, gradient) read their API key from the referenced Secret",
    ),
    Rule(
        "application",
        SCHEDULING,
        ("priorityclasses",),
        ("get", "list", "watch"),
        True,
        "quota queues are ordered by the value of the job's priority class",
    ),
    Rule(
        "application",
        KUEUE,
        ("workloads",),
        ("get", "list", "watch"),
        False,
        "Kueue mode: read Kueue's admission of the trainer Job",
        feature="kueue",
    ),
)


def rules(
    *, peering: bool = False, kueue: bool = False, clusterwide: bool = True, part: Part | None = None
) -> list[Rule]:
    """The rules the operator needs in a given configuration."""
    out = []
    for rule in RULES:
        if part is not None and rule.part != part:
            continue
        if (rule.feature == "peering" and not peering) or (rule.feature == "kueue" and not kueue):
            continue
        if (rule.clusterwide_only and not clusterwide) or (rule.namespaced_only and clusterwide):
            continue
        out.append(rule)
    return out


def permissions(*, peering: bool = False, kueue: bool = False, clusterwide: bool = True) -> set[Permission]:
    """Every (group, resource, verb) the operator needs in a given configuration."""
    return {
        Permission(r.group, res, verb)
        for r in rules(peering=peering, kueue=kueue, clusterwide=clusterwide)
        for res in r.resources
        for verb in r.verbs
    }


def permission_of(call: Any) -> Permission:
    """A `finetune_operator.kube.Call` (or anything with verb, group, resource, subresource) as a Permission."""
    resource = str(call.resource) + (f"/{call.subresource}" if call.subresource else "")
    return Permission(str(call.group), resource, str(call.verb))


def uncovered(
    calls: Iterable[Any], *, peering: bool = False, kueue: bool = False, clusterwide: bool = True
) -> list[Permission]:
    """The recorded calls that the rules do not allow (empty when RBAC covers everything)."""
    allowed = permissions(peering=peering, kueue=kueue, clusterwide=clusterwide)
    return sorted({permission_of(c) for c in calls} - allowed)
