"""The committed CRDs are exactly what the models generate, and read like documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from finetune_operator.api import parse_job, parse_quota
from finetune_operator.api.crdgen import all_crds, render
from finetune_operator.cli import app

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_committed_crds_do_not_drift(name: str) -> None:
    committed = (ROOT / "crds" / name).read_text()
    assert committed == render(all_crds()[name]), "crds/ is stale: run `make crds`"


def _walk(node: dict[str, Any], path: str, out: list[str]) -> None:
    for key, sub in node.get("properties", {}).items():
        if key != "metadata" and not sub.get("description"):
            out.append(f"{path}.{key}")
        _walk(sub, f"{path}.{key}", out)
    if "items" in node:
        _walk(node["items"], f"{path}[]", out)


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_every_field_is_described(name: str) -> None:
    crd = all_crds()[name]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing: list[str] = []
    _walk(schema, "", missing)
    assert missing == []


def test_finetunejob_crd_shape() -> None:
    crd = all_crds()["finetune.dev_finetunejobs.yaml"]
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert {"Engine", "Phase", "Progress", "Model", "Age"} <= set(columns)
    assert not any("conditions" in p for p in columns.values())
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert spec["properties"]["engine"]["x-kubernetes-validations"]
    assert any("immutable" in r["message"] for r in schema["x-kubernetes-validations"])
    st = spec["properties"]["engine"]["properties"]["sentenceTransformers"]["properties"]
    assert st["model"]["default"] == "BAAI/bge-small-en"
    assert st["loss"]["default"] == "MultipleNegativesRankingLoss"
    conds = schema["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"


def test_trainingquota_crd_is_cluster_scoped() -> None:
    crd = all_crds()["finetune.dev_trainingquotas.yaml"]
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["tq"]


def test_crds_command_check_detects_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["crds", "-o", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["crds", "-o", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "finetune.dev_finetunejobs.yaml").write_text("stale")
    result = runner.invoke(app, ["crds", "-o", str(tmp_path), "--check"])
    assert result.exit_code == 1


def test_cli_help_lists_subcommands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("operator", "train", "local", "dataset", "eval", "crds"):
        assert command in result.output


def _examples() -> list[Path]:
    return sorted(p for p in (ROOT / "examples").rglob("*.yaml"))


def test_every_engine_has_a_valid_example() -> None:
    engines: set[str] = set()
    for path in _examples():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "FinetuneJob":
                engines.add(parse_job(doc).spec.engine.kind.value)
    assert engines >= {"sentenceTransformers", "adapter", "openai", "gradient"}


@pytest.mark.parametrize("path", _examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if doc.get("kind") == "FinetuneJob":
            parse_job(doc)
        elif doc.get("kind") == "TrainingQuota":
            parse_quota(doc)


def _unbounded(node: dict[str, Any], path: str, out: list[str]) -> None:
    typ = node.get("type")
    if typ == "string" and "maxLength" not in node:
        out.append(f"{path}: string without maxLength")
    if typ == "array" and "maxItems" not in node:
        out.append(f"{path}: list without maxItems")
    if typ == "object" and "additionalProperties" in node and "maxProperties" not in node:
        out.append(f"{path}: map without maxProperties")
    if (
        node.get("x-kubernetes-preserve-unknown-fields")
        and "maxProperties" not in node
        and path != ".metadata"
    ):
        out.append(f"{path}: free-form object without maxProperties")
    for key, sub in node.get("properties", {}).items():
        _unbounded(sub, f"{path}.{key}", out)
    if isinstance(node.get("items"), dict):
        _unbounded(node["items"], f"{path}[*]", out)
    if isinstance(node.get("additionalProperties"), dict):
        _unbounded(node["additionalProperties"], f"{path}{{*}}", out)


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_every_string_list_and_map_is_bounded(name: str) -> None:
    """Without maxLength / maxItems / maxProperties the API server's CEL cost estimator assumes the 3 MiB
    request limit (issue 11: a v1.36 kube-apiserver refused the CRD)."""
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found: list[str] = []
    for key in ("spec", "status"):
        if key in schema["properties"]:
            _unbounded(schema["properties"][key], f".{key}", found)
    assert found == []
