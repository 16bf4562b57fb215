"""The docs stay true to the code: the generated API reference, links, values and RBAC tables, checkov ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from finetune_operator.api.docgen import render_reference
from finetune_operator.config import Settings
from finetune_operator.rbac_requirements import RULES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", path.read_text(), flags=re.M)}


def test_api_reference_is_generated_from_the_models() -> None:
    committed = (DOCS / "api-reference.md").read_text()
    assert committed == render_reference(), (
        "docs/api-reference.md is stale: python -m finetune_operator.api.docgen > docs/api-reference.md"
    )


def test_api_reference_documents_every_spec_field() -> None:
    text = render_reference()
    for name in ("engine", "dataset", "output", "placement", "runPolicy", "namespaceSelector", "limits"):
        assert f"`{name}`" in text
    assert "### `FinetuneJob.spec.engine.adapter`" in text
    assert "### `TrainingQuota.spec.limits.gpus[]`" in text
    assert "set exactly one engine" in text  # CEL rule messages are listed


def test_index_links_every_doc() -> None:
    index = (DOCS / "index.md").read_text()
    linked = {m for m in LINK.findall(index)}
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p.name not in linked)
    assert not missing, f"docs/index.md does not link: {missing}"


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # code is not a link
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"{path.name}: broken link {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{path.name}: no heading for #{anchor} in {dest.name}"


def test_install_values_table_covers_every_setting() -> None:
    text = (DOCS / "install.md").read_text()
    for name in Settings.model_fields:
        assert f"`operator.{_camel(name)}`" in text, f"docs/install.md: operator.{_camel(name)} undocumented"
        assert f"`FINETUNE_{name.upper()}" in text


def test_install_documents_every_chart_value() -> None:
    values = yaml.safe_load((ROOT / "helm" / "finetune-operator" / "values.yaml").read_text())
    text = (DOCS / "install.md").read_text()
    for key in values:
        if key != "operator":
            assert f"`{key}" in text, f"docs/install.md does not document the chart value {key}"


def test_security_tables_cover_every_rbac_rule() -> None:
    text = (DOCS / "security.md").read_text()
    for rule in RULES:
        for res in rule.resources:
            assert f"`{res}`" in text, f"docs/security.md: RBAC on {res} is undocumented"


def test_security_explains_checkov_findings_in_a_table() -> None:
    text = (DOCS / "security.md").read_text()
    section = text.split("## Explained checkov findings", 1)[1]
    ids = re.findall(r"^\|\s*`?(CKV2?_K8S_\d+)`?\s*\|", section, flags=re.M)
    assert ids and len(ids) == len(set(ids))
    script = (ROOT / ".ci" / "checkov.sh").read_text()
    assert "## Explained checkov findings" in script


def test_build_commands_are_documented() -> None:
    text = (DOCS / "install.md").read_text()
    assert "docker build -f operator/Dockerfile" in text
    assert "docker build -f trainer_image/Dockerfile" in text
    assert "kubectl apply --server-side -f helm/finetune-operator/crds/" in text


def test_gitops_documents_kubectl_wait_and_the_lua() -> None:
    text = (DOCS / "gitops.md").read_text()
    assert "kubectl wait --for=condition=Succeeded ftj/" in text
    assert "resource.customizations.health.finetune.dev_FinetuneJob" in text
    for cond in ("Ready", "Reconciling", "Stalled", "observedGeneration"):
        assert cond in text


def test_troubleshooting_covers_the_status_reasons() -> None:
    from finetune_operator.status import observed

    text = (DOCS / "troubleshooting.md").read_text()
    reasons = [v for k, v in vars(observed).items() if k.startswith("R_") and isinstance(v, str)]
    assert reasons
    missing = sorted(r for r in reasons if f"`{r}`" not in text and r not in {"Admitted", "Succeeded"})
    assert not missing, f"docs/troubleshooting.md does not explain the reasons {missing}"
