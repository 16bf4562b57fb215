"""The images the chart runs: operator/Dockerfile is slim, torch-free, non-root, and versioned like the chart."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "operator" / "Dockerfile"


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_operator_image_is_slim_non_root_and_torch_free() -> None:
    steps = _instructions(DOCKERFILE)
    froms = [rest for word, rest in steps if word == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert '".[openai,gradient]"' in runs
    assert "trainer" not in re.findall(r'"\.\[([^\]]*)\]"', runs)[0]
    assert not any(word == "COPY" and "trainer_image" in rest for word, rest in steps)
    users = [rest for word, rest in steps if word == "USER"]
    assert users[-1] == "65532:65532"
    assert json.loads(next(rest for word, rest in steps if word == "ENTRYPOINT")) == ["finetune"]
    assert json.loads(next(rest for word, rest in steps if word == "CMD")) == ["operator"]


def test_image_versions_match_the_project_and_chart() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "helm" / "finetune-operator" / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    steps = _instructions(DOCKERFILE)
    assert f"VERSION={version}" in [rest for word, rest in steps if word == "ARG"]
    labels = " ".join(rest for word, rest in steps if word == "LABEL")
    for key in ("version", "revision", "source", "licenses", "title", "created"):
        assert f"org.opencontainers.image.{key}=" in labels
    values = yaml.safe_load((ROOT / "helm" / "finetune-operator" / "values.yaml").read_text())
    assert values["operator"]["trainerImage"].endswith(f":{version}")
