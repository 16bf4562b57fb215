"""The chart's RBAC: explicit, no wildcards, and exactly what the operator needs.

`finetune_operator.rbac_requirements` is the source of truth of what the operator calls. These tests check
that every values set renders exactly those rules (no more: least privilege; no less: nothing is
forbidden at run time), in the right kind of role (ClusterRole or per-namespace Role), bound to the
operator's ServiceAccount. A scan of the operator's source checks that the API calls written in the code
(KubeClient calls with a literal resource, kopf handler registrations) are in the requirements too; the
integration tests check the calls recorded at run time (`KubeClient.calls`) with `rbac_requirements.uncovered`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_chart import VALUES_FILES, by_kind, load_values, manifests

from finetune_operator.api.common import GROUP
from finetune_operator.rbac_requirements import (
    RULES,
    Permission,
    permission_of,
    permissions,
    rules,
    uncovered,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "finetune_operator"
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}


def config_of(values: dict[str, Any]) -> dict[str, bool]:
    op = values.get("operator", {})
    return {
        "peering": bool(op.get("peering")),
        "kueue": bool(op.get("kueueMode")),
        "clusterwide": not op.get("namespaces"),
    }


def grants(role: dict[str, Any]) -> set[Permission]:
    return {
        Permission(group, res, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }


CLUSTER_SCOPED = {(r.group, res) for r in RULES if r.cluster_scoped for res in r.resources}


@pytest.mark.parametrize("name", VALUES_FILES)
def test_no_wildcards_or_escalation(name: str) -> None:
    docs = manifests(load_values(name))
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, role["metadata"]["name"]
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert all("*" not in item for item in rule.get(key, [])), (role["metadata"]["name"], rule)
            assert not DANGEROUS_VERBS & set(rule["verbs"]), rule
            assert rule["verbs"] and rule["resources"]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_rendered_rbac_is_exactly_the_requirements(name: str) -> None:
    values = load_values(name)
    cfg = config_of(values)
    docs = manifests(values)
    cluster_roles = by_kind(docs, "ClusterRole")
    roles = by_kind(docs, "Role")
    namespaces = values.get("operator", {}).get("namespaces") or []
    for part in ("framework", "application"):
        expected = {
            Permission(r.group, res, v)
            for r in rules(part=part, **cfg)
            for res in r.resources
            for v in r.verbs
        }
        (cluster_role,) = [
            r for r in cluster_roles if r["metadata"]["labels"]["finetune.dev/rbac-part"] == part
        ]
        in_cluster = grants(cluster_role)
        if cfg["clusterwide"]:
            assert not roles
            assert in_cluster == expected, (
                f"{part}: missing {expected - in_cluster}, extra {in_cluster - expected}"
            )
            continue
        # namespaced mode: cluster-scoped resources in the ClusterRole, the rest in a Role per namespace
        assert all((p.group, p.resource) in CLUSTER_SCOPED for p in in_cluster), in_cluster
        part_roles = [r for r in roles if r["metadata"]["labels"]["finetune.dev/rbac-part"] == part]
        assert sorted(r["metadata"]["namespace"] for r in part_roles) == sorted(namespaces)
        for role in part_roles:
            in_ns = grants(role)
            assert all((p.group, p.resource) not in CLUSTER_SCOPED for p in in_ns), in_ns
            assert in_ns | in_cluster == expected, (
                f"{part} in {role['metadata']['namespace']}: missing {expected - in_ns - in_cluster}, "
                f"extra {(in_ns | in_cluster) - expected}"
            )


@pytest.mark.parametrize("name", VALUES_FILES)
def test_bindings_bind_the_operator_service_account(name: str) -> None:
    docs = manifests(load_values(name))
    (dep,) = by_kind(docs, "Deployment")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    roles = {
        (r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"])
        for r in by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    }
    bindings = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    bound = set()
    for b in bindings:
        ns = b["metadata"].get("namespace")
        ref = (b["roleRef"]["kind"], ns if b["roleRef"]["kind"] == "Role" else None, b["roleRef"]["name"])
        assert ref in roles, ref
        assert b["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": sa["metadata"]["name"],
                "namespace": sa["metadata"]["namespace"],
            }
        ]
        bound.add(ref)
    assert bound == roles


def test_escalation_prevention_status_permissions_are_held() -> None:
    """The operator grants trainers get/patch on finetunejobs/status, so it must hold both itself."""
    for cfg in ({"clusterwide": True}, {"clusterwide": False}):
        held = permissions(**cfg)
        assert Permission(GROUP, "finetunejobs/status", "get") in held
        assert Permission(GROUP, "finetunejobs/status", "patch") in held


def test_per_job_trainer_role_is_within_the_operator_rules() -> None:
    """Whatever the builders put into the per-job Role must be held by the operator (RBAC escalation)."""
    from finetune_operator.api.finetunejob import FinetuneJob
    from finetune_operator.builders.rbac import build_rbac
    from finetune_operator.config import Settings

    job = FinetuneJob.model_validate(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "0000-1111"},
            "spec": {
                "engine": {"adapter": {}},
                "dataset": {"train": {"url": "https://example.com/train.json"}},
                "output": {"storageUri": "pvc://models/demo"},
            },
        }
    )
    (role,) = [o for o in build_rbac(job, Settings()) if o["kind"] == "Role"]
    assert grants(role) <= permissions(clusterwide=False)
    assert all(rule.get("resourceNames") == ["demo"] for rule in role["rules"])


# ----------------------------------------------------------------------------- what the code calls

_METHOD_VERBS = {
    "get": ("get",),
    "get_or_none": ("get",),
    "list": ("list",),
    "create": ("create",),
    "create_if_absent": ("create", "get"),
    "patch": ("patch",),
    "delete": ("delete",),
    "patch_status": ("patch",),
}
_GROUPS = {
    "pods": "",
    "configmaps": "",
    "secrets": "",
    "serviceaccounts": "",
    "events": "",
    "namespaces": "",
    "persistentvolumeclaims": "",
    "jobs": "batch",
    "roles": "rbac.authorization.k8s.io",
    "rolebindings": "rbac.authorization.k8s.io",
    "leases": "coordination.k8s.io",
    "finetunejobs": GROUP,
    "trainingquotas": GROUP,
    "priorityclasses": "scheduling.k8s.io",
    "workloads": "kueue.x-k8s.io",
}


def calls_in_source() -> set[tuple[str, Permission]]:
    """(file:line, permission) of every KubeClient call with a literal resource in the operator's code."""
    found: set[tuple[str, Permission]] = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "local" or path.name == "kube.py":  # local mode runs its own emulator
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method = node.func.attr
            target = ast.unparse(node.func.value)
            if method not in _METHOD_VERBS or "kube" not in target or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            resource = first.value
            sub = next(
                (
                    str(kw.value.value)
                    for kw in node.keywords
                    if kw.arg == "subresource" and isinstance(kw.value, ast.Constant)
                ),
                None,
            )
            if method == "patch_status":
                sub = "status"
            for verb in _METHOD_VERBS[method]:
                full = resource + (f"/{sub}" if sub else "")
                found.add((f"{rel}:{node.lineno}", Permission(_GROUPS.get(resource, "?"), full, verb)))
    return found


def test_every_call_in_the_source_is_allowed() -> None:
    found = calls_in_source()
    assert found, "the scan found no KubeClient calls: has the client API changed?"
    allowed = permissions(peering=True, kueue=True, clusterwide=True)
    missing = sorted((where, p) for where, p in found if p not in allowed)
    assert not missing, (
        "calls the chart's RBAC does not allow (add them to rbac_requirements.py and the "
        f"chart's templates/_helpers.tpl): {missing}"
    )


def test_kopf_watched_resources_are_allowed() -> None:
    """Every resource a kopf handler is registered for needs list and watch (and patch for finalizers)."""
    source = (
        "\n".join(p.read_text() for p in (PACKAGE / "handlers").rglob("*.py"))
        if (PACKAGE / "handlers").is_dir()
        else (PACKAGE / "handlers.py").read_text()
    )
    tree = ast.parse(source)
    watched: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and ast.unparse(node.func).startswith("kopf.on.")
            and node.args
        ):
            args = [ast.unparse(a) for a in node.args]
            plural = args[-1].strip("'\"")
            plural = {"PLURAL": "finetunejobs", "QUOTA_PLURAL": "trainingquotas"}.get(plural, plural)
            watched.add((_GROUPS.get(plural, "?"), plural))
    assert (GROUP, "finetunejobs") in watched
    allowed = permissions(clusterwide=True)
    for group, plural in watched:
        for verb in ("list", "watch"):
            assert Permission(group, plural, verb) in allowed, (group, plural, verb)


def test_uncovered_reports_calls_outside_the_rules() -> None:
    class FakeCall:
        def __init__(self, verb: str, group: str, resource: str, subresource: str = "") -> None:
            self.verb, self.group, self.resource, self.subresource = verb, group, resource, subresource

    ok = [FakeCall("create", "batch", "jobs"), FakeCall("patch", GROUP, "finetunejobs", "status")]
    assert uncovered(ok) == []
    bad = FakeCall("delete", "", "secrets")
    assert uncovered([*ok, bad]) == [permission_of(bad)]
    assert uncovered([FakeCall("get", "kueue.x-k8s.io", "workloads")]) != []
    assert uncovered([FakeCall("get", "kueue.x-k8s.io", "workloads")], kueue=True) == []


def test_rule_resources_are_unique_per_part() -> None:
    seen: dict[tuple[str, str, str, bool, bool], int] = defaultdict(int)
    for r in RULES:
        for res in r.resources:
            seen[(r.part, r.group, res, r.clusterwide_only, r.namespaced_only)] += 1
    assert all(n == 1 for n in seen.values()), seen
