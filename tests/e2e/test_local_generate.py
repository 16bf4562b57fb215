"""A FinetuneJob with `dataset.generate` runs end to end in local mode: the real operator against the
emulator renders the trainer pod, the local executor resolves the LLM key from the Secret, the trainer
generates questions from the documents through the real `openai` SDK against a fake chat-completions
server, then trains an adapter on them, in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from tests.e2e.local_support import ROOT, run_local_async, write_manifests
from tests.fakes.fake_llm import FakeLLM

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_generate_then_train_in_one_local_run(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples/generate/finetunejob.yaml").read_text()))
    secret = next(d for d in docs if d["kind"] == "Secret")
    job = next(d for d in docs if d["kind"] == "FinetuneJob")
    async with FakeLLM(api_key=secret["stringData"]["key"]) as llm:
        gen = job["spec"]["dataset"]["generate"]
        gen["llm"]["baseUrl"] = llm.base_url
        gen["chunkSize"] = 160
        gen["chunkOverlap"] = 0
        gen["validationFraction"] = 0.34
        job["spec"]["engine"]["adapter"]["epochs"] = 2
        job["spec"]["placement"]["resources"] = {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"}
        manifests = write_manifests(tmp_path, {"all.yaml": yaml.safe_dump_all(docs)})
        workdir = tmp_path / "work"
        env = {
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
        }
        code, text = await run_local_async(manifests, workdir, env)
        assert code == 0, text
        assert len(llm.chat_requests) >= 2  # one request per chunk at least
    assert "default/docs-adapter" in text and "Succeeded" in text
    root = workdir / "pvc/finetune-models/docs-adapter/default/docs-adapter"
    result = json.loads((root / "result.json").read_text())
    assert result["status"] == "succeeded"
    assert result["dataset"]["trainQueries"] > 0
    assert result["generation"]["requests"] >= 2
    assert result["metrics"]["after"]["mrrAt10"] is not None
    train = json.loads((root / "dataset/train.json").read_text())
    assert train["queries"] and train["corpus"] and train["relevant_docs"]
    assert secret["stringData"]["key"] not in (root / "result.json").read_text()
    assert any((root / "model").iterdir())
