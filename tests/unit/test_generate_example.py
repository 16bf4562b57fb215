"""examples/generate/finetunejob.yaml is a valid FinetuneJob whose documents exist in its ConfigMap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_operator.api import parse_job

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "generate" / "finetunejob.yaml"


def test_example_parses_and_references_its_configmap() -> None:
    docs: list[dict[str, Any]] = list(yaml.safe_load_all(EXAMPLE.read_text()))
    job = parse_job(next(d for d in docs if d["kind"] == "FinetuneJob"))
    assert job.spec.dataset is not None and job.spec.dataset.generate is not None
    gen = job.spec.dataset.generate
    assert gen.llm.api_key_secret_ref is not None
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    for source in gen.documents:
        assert source.config_map is not None
        assert source.config_map.key in configmaps[source.config_map.name]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    assert gen.llm.api_key_secret_ref.key in secrets[gen.llm.api_key_secret_ref.name]
