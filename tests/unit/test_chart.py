"""The Helm chart: renders, lints strictly and validates for every values file in helm/finetune-operator/ci/.

Rendering uses helm-python-sdk (Helm's Go SDK through a C library; no helm binary). Every rendered manifest
is validated: built-in kinds with kubernetes-validate (strict: unknown fields are errors), custom resources
against the CRD that defines them (the chart's own CRDs, or kopf's peering CRDs rendered by the chart).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from tests.crdcheck import validate as validate_against_crd

from finetune_operator.api.trainingquota import TrainingQuota
from finetune_operator.config import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "finetune-operator"
VALUES_FILES = ("default", "namespaced", "peering", "kueue", "metrics")
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes version the chart is validated against
RELEASE = "ftop"
NAMESPACE = "finetune-system"
# Custom kinds with no CRD available offline: checked structurally in test_servicemonitor instead.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def load_values(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return data or {}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (dep,) = by_kind(manifests(values), "Deployment")
    return dep


def chart_crds() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))}


def test_values_files_are_the_documented_set() -> None:
    assert sorted(p.name for p in (CHART / "ci").glob("*-values.yaml")) == sorted(
        f"{n}-values.yaml" for n in VALUES_FILES
    )


def test_chart_metadata() -> None:
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert meta["name"] == "finetune-operator"


def test_chart_crds_are_the_generated_crds() -> None:
    top = sorted((ROOT / "crds").glob("*.yaml"))
    assert top, "crds/ is empty: run `make crds`"
    assert [p.name for p in top] == [p.name for p in sorted((CHART / "crds").glob("*.yaml"))]
    for path in top:
        assert (CHART / "crds" / path.name).read_text() == path.read_text(), (
            f"helm/finetune-operator/crds/{path.name} differs from crds/{path.name}: run `make crds`"
        )


@pytest.mark.parametrize("name", VALUES_FILES)
def test_lint_strict(name: str) -> None:
    report = helm.lint(
        CHART, load_values(name), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], json.dumps(report, indent=1)


@pytest.mark.parametrize("name", VALUES_FILES)
def test_every_manifest_validates(name: str) -> None:
    docs = manifests(load_values(name))
    assert docs
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in chart_crds().values()}
    crds |= {
        (c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in by_kind(docs, "CustomResourceDefinition")
    }
    for doc in docs:
        api_version, kind = doc["apiVersion"], doc["kind"]
        where = f"{kind}/{doc['metadata']['name']}"
        group = api_version.split("/")[0] if "/" in api_version else ""
        if (group, kind) in crds:
            crd = crds[(group, kind)]
            root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].get("properties", {})
            # the API server always allows apiVersion, kind and metadata at the root
            body = {k: v for k, v in doc.items() if k in root or k not in ("apiVersion", "kind", "metadata")}
            errors = validate_against_crd(body, crd)
            assert not errors, f"{where}: {errors}"
        elif (api_version, kind) in NO_SCHEMA:
            continue
        else:
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(
                    f"{where} ({name}): {'.'.join(map(str, exc.path))}: {exc.message}"
                ) from exc


def test_chart_crds_validate() -> None:
    for name, crd in chart_crds().items():
        try:
            kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}") from exc


def test_validation_catches_a_broken_manifest() -> None:
    """The validator really rejects unknown fields (so test_every_manifest_validates can fail)."""
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUES_FILES)
def test_restricted_pod_security(name: str) -> None:
    pod = deployment(load_values(name))["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc.get("privileged", False) is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        # a read-only root filesystem needs a writable /tmp (kube.py writes TLS material there)
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_standalone_is_one_replica_recreated() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_peering_runs_several_replicas_with_kopf_peering_objects() -> None:
    values = load_values("peering")
    docs = manifests(values)
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == values["peering"]["replicas"] > 1
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(dep)
    assert env["FINETUNE_PEERING"] == "true"
    assert env["FINETUNE_PEERING_NAME"] == "finetune-operator-prod"
    crd_names = {c["metadata"]["name"] for c in by_kind(docs, "CustomResourceDefinition")}
    assert crd_names == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    (peering,) = by_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "finetune-operator-prod"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    # the peering CRDs can be left to another kopf operator
    without = manifests({**values, "peering": {**values["peering"], "installCRDs": False}})
    assert not by_kind(without, "CustomResourceDefinition")


def test_namespaced_peering_uses_kopfpeering_per_namespace() -> None:
    docs = manifests(load_values("metrics"))
    peerings = by_kind(docs, "KopfPeering")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("ml", "finetune-operator")
    ]
    assert not by_kind(docs, "ClusterKopfPeering")


def test_no_peering_objects_without_peering() -> None:
    docs = manifests()
    assert not by_kind(docs, "CustomResourceDefinition")
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "KopfPeering")


def env_of(dep: dict[str, Any]) -> dict[str, str]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_operator_values_map_one_to_one_onto_settings() -> None:
    with helm.Chart.load(CHART) as chart:
        operator_values = chart.values["operator"]
    fields = {f.alias or _camel(name): (name, f) for name, f in Settings.model_fields.items()}
    assert sorted(operator_values) == sorted(fields), (
        "values.yaml `operator:` keys differ from Settings fields"
    )
    defaults = Settings.model_construct()
    for key, value in operator_values.items():
        name, _ = fields[key]
        assert value == getattr(defaults, name), (
            f"operator.{key}: chart default {value!r} != Settings default"
        )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@pytest.mark.parametrize("name", VALUES_FILES)
def test_rendered_env_parses_into_the_settings_the_values_ask_for(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = load_values(name)
    dep = deployment(values)
    env = env_of(dep)
    assert all(k.startswith("FINETUNE_") for k in env)
    for key in list(Settings.model_fields):
        monkeypatch.delenv(f"FINETUNE_{key.upper()}", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values)["operator"]
    for key, value in merged.items():
        field = next(n for n in Settings.model_fields if _camel(n) == key)
        if value is None:
            assert f"FINETUNE_{field.upper()}" not in env
            continue
        assert getattr(settings, field) == value, f"operator.{key} ({name})"
    # every key set in the values file reached the operator
    for key, value in values.get("operator", {}).items():
        assert getattr(settings, next(n for n in Settings.model_fields if _camel(n) == key)) == value


def test_large_numbers_reach_the_operator_unmangled(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(deployment({"operator": {"defaultCheckpointSteps": 10000000, "resyncPeriodSeconds": 0.5}}))
    assert env["FINETUNE_DEFAULT_CHECKPOINT_STEPS"] == "10000000"
    assert env["FINETUNE_RESYNC_PERIOD_SECONDS"] == "0.5"


def test_container_command_and_namespaces() -> None:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["finetune"]
    assert container["args"] == ["operator"]
    values = load_values("namespaced")
    (container,) = deployment(values)["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["operator", "--namespace", "ml-team-a", "--namespace", "ml-team-b"]
    assert json.loads(env_of(deployment(values))["FINETUNE_NAMESPACES"]) == ["ml-team-a", "ml-team-b"]


def test_probes_and_ports_follow_the_settings() -> None:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    (container,) = deployment({"operator": {"healthPort": 0, "metricsPort": 0}})["spec"]["template"]["spec"][
        "containers"
    ]
    assert "livenessProbe" not in container and "ports" not in container
    assert not by_kind(manifests({"operator": {"metricsPort": 0}}), "Service")


def test_image_tag_and_digest() -> None:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/finetune-operator/operator:0.1.0"
    (container,) = deployment(load_values("metrics"))["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/finetune-operator/operator@sha256:")


def test_servicemonitor() -> None:
    docs = manifests(load_values("metrics"))
    (svc,) = by_kind(docs, "Service")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (dep,) = by_kind(docs, "Deployment")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not by_kind(manifests(), "ServiceMonitor")


def test_default_quota_is_optional_and_valid() -> None:
    assert not by_kind(manifests(), "TrainingQuota")
    (quota,) = by_kind(manifests(load_values("namespaced")), "TrainingQuota")
    parsed = TrainingQuota.model_validate(quota)
    assert parsed.metadata.name == "teams"
    assert parsed.spec.limits.gpus is not None and parsed.spec.limits.gpus[0].count == 4
    (quota,) = by_kind(manifests({"defaultQuota": {"enabled": True}}), "TrainingQuota")
    assert TrainingQuota.model_validate(quota).spec.limits.max_jobs == 10


def test_notes_tell_what_to_do_next() -> None:
    notes = render(load_values("kueue"))["finetune-operator/templates/NOTES.txt"]
    assert "kubectl get ftj" in notes
    assert "kubectl wait --for=condition=Succeeded ftj/" in notes
    assert "kind: FinetuneJob" in notes
    assert "resource.customizations.health.finetune.dev_FinetuneJob" in notes
    assert "Kueue mode is on" in notes
    lua = (ROOT / "docs" / "argocd-health.lua").read_text()
    assert lua.splitlines()[5].strip() in notes


def test_chart_lua_is_the_documented_lua() -> None:
    assert (CHART / "files" / "argocd-health.lua").read_text() == (
        ROOT / "docs" / "argocd-health.lua"
    ).read_text()


def test_network_policy_admits_only_metrics_and_health() -> None:
    docs = manifests()
    (policy,) = by_kind(docs, "NetworkPolicy")
    (dep,) = by_kind(docs, "Deployment")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8080, 8081]
    (policy,) = by_kind(manifests({"operator": {"metricsPort": 0, "healthPort": 0}}), "NetworkPolicy")
    assert policy["spec"]["ingress"] == []
    assert not by_kind(manifests({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
