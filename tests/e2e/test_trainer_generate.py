"""The trainer pod's first stage: dataset generation against the fake LLM, then training, in one run.

The TrainerConfig is rendered by the operator's own builder from a FinetuneJob with `dataset.generate`
(ConfigMap documents, a pvc:// base model, a pvc:// output), and `python -m finetune_trainer` runs it with
FINETUNE_PATH_MAP mapping the pod's mount points to temp dirs, as the local executor would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.fake_llm import FakeLLM
from tests.trainer_fixtures import build_tiny_model

from finetune_operator.api import parse_job
from finetune_operator.api.trainerconfig import CONFIG_FILE, DATA_MOUNT, OUTPUT_MOUNT, PVC_MOUNT, ReportSpec
from finetune_operator.builders.trainerconfig import build_trainer_config
from finetune_operator.config import Settings
from finetune_operator.status.sections import derive_dataset, derive_metrics, derive_model
from finetune_trainer.data import load_dataset, validate_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

API_KEY = "sk-generate-e2e"
TOPICS = ("battery", "firmware", "warranty", "shipping", "returns", "charging", "display", "storage")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _job(base_url: str, generate_only: bool, max_retries: int = 3) -> Any:
    return parse_job(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FinetuneJob",
            "metadata": {"name": "docs-adapter", "namespace": "team-a", "uid": "uid-1", "generation": 1},
            "spec": {
                "engine": {"adapter": {"baseModel": "pvc://models/tiny", "epochs": 5, "batchSize": 8}},
                "dataset": {
                    "generate": {
                        "documents": [
                            {"configMap": {"name": "product-docs", "key": "guide.md"}},
                            {"configMap": {"name": "product-docs", "key": "faq.html"}},
                        ],
                        "llm": {
                            "baseUrl": base_url,
                            "model": "fake-model",
                            "apiKeySecretRef": {"name": "llm", "key": "key"},
                            "maxConcurrency": 2,
                            "maxRetries": max_retries,
                        },
                        "questionsPerChunk": 3,
                        "chunkSize": 200,
                        "chunkOverlap": 20,
                        "validationFraction": 0.25,
                        "saveEvery": 5,
                        "generateOnly": generate_only,
                    }
                },
                "output": {"storageUri": "pvc://finetune-models/runs", "checkpointSteps": 10},
            },
        }
    )


def _pod_root(tmp: Path, tiny: Path) -> dict[str, Path]:
    """Host dirs for the pod's mounts, with the documents and the model where the pod expects them."""
    roots = {"data": tmp / "data", "pvc": tmp / "pvc", "output": tmp / "output", "cfg": tmp / "cfg"}
    for p in roots.values():
        p.mkdir(parents=True)
    docs = roots["data"] / "product-docs"
    docs.mkdir()
    (docs / "guide.md").write_text(
        "# Guide\n\n"
        + " ".join(
            f"The {t} chapter of the Tarnton {i} manual explains the {t} rules in plain words."
            for i in range(6)
            for t in TOPICS[:4]
        ),
        encoding="utf-8",
    )
    (docs / "faq.html").write_text(
        "<html><body>"
        + "".join(
            f"<p>Question {i}: how does {t} work on the Dovelle {i}? It works well.</p>"
            for i in range(5)
            for t in TOPICS[4:]
        )
        + "</body></html>",
        encoding="utf-8",
    )
    (roots["pvc"] / "models").mkdir()
    (roots["pvc"] / "models" / "tiny").symlink_to(tiny, target_is_directory=True)
    return roots


async def _run_trainer(
    base_url: str, tmp: Path, tiny: Path, generate_only: bool, max_retries: int = 3
) -> tuple[int, str, Any, Path]:
    roots = _pod_root(tmp, tiny)
    job = _job(base_url, generate_only, max_retries)
    cfg = build_trainer_config(job, Settings(), attempt=1)
    cfg = cfg.model_copy(update={"report": ReportSpec()})  # no API server here
    (roots["cfg"] / CONFIG_FILE).write_text(cfg.model_dump_json(by_alias=True), encoding="utf-8")
    term_log = tmp / "termination-log"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "FINETUNE_LLM_API_KEY": API_KEY,
        "FINETUNE_ATTEMPT": "2",
        "FINETUNE_TERMINATION_LOG": str(term_log),
        "FINETUNE_PATH_MAP": f"{DATA_MOUNT}={roots['data']},{PVC_MOUNT}={roots['pvc']},"
        f"{OUTPUT_MOUNT}={roots['output']}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "finetune_trainer",
        "--config",
        str(roots["cfg"] / CONFIG_FILE),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    code = proc.returncode
    assert code is not None
    output_dir = roots["output"] / "runs" / "team-a" / "docs-adapter"
    return code, out.decode(errors="replace"), job, output_dir


async def test_generate_then_train_in_one_run(tiny: Path, tmp_path: Path) -> None:
    async with FakeLLM(api_key=API_KEY) as llm:
        code, log, job, out = await _run_trainer(llm.base_url, tmp_path, tiny, generate_only=False)
    assert code == 0, log[-4000:]
    assert API_KEY not in log
    assert llm.chat_requests and all(r.authorization == f"Bearer {API_KEY}" for r in llm.chat_requests)
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result == json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded" and result["attempt"] == 2

    # the generated datasets are valid and are what the model was trained and evaluated on
    train = load_dataset(str(out / "dataset" / "train.json"))
    val = load_dataset(str(out / "dataset" / "val.json"))
    validate_dataset(train)
    validate_dataset(val)
    base = "pvc://finetune-models/runs/team-a/docs-adapter"
    assert result["dataset"] == {
        "trainUri": f"{base}/dataset/train.json",
        "validationUri": f"{base}/dataset/val.json",
        "trainQueries": len(train.queries),
        "validationQueries": len(val.queries),
        "corpusSize": len(set(train.corpus) | set(val.corpus)),
        "validationSource": "given",
    }
    gen = result["generation"]
    assert gen["requests"] == len(llm.chat_requests) == gen["chunks"] > 2
    assert gen["questions"] == len(train.queries) + len(val.queries)
    assert gen["totalTokens"] > 0

    # a trained model, from the pvc:// base model, saved below the job's output
    assert result["model"] == {
        "storageUri": f"{base}/model",
        "format": "adapter",
        "baseModel": "pvc://models/tiny",
    }
    assert (out / "model" / "adapter" / "pytorch_model.bin").is_file()
    per_epoch = -(-len(train.queries) // 8)
    assert result["steps"] == 5 * per_epoch
    assert result["metrics"]["after"]["queries"] == len(val.queries)

    # progress went through a "generate" stage before training
    stages = [
        json.loads(line)["progress"].get("stage")
        for line in (out / "progress.jsonl").read_text().splitlines()
    ]
    assert "generate" in stages and "train" in stages
    assert stages.index("generate") < stages.index("train")

    # the operator's status derivation reads what the trainer wrote
    ds = derive_dataset(result)
    assert ds is not None and ds.train_uri == f"{base}/dataset/train.json"
    model = derive_model(job, result, succeeded=True)
    assert model is not None and model.storage_uri == f"{base}/model" and model.format == "adapter"
    assert derive_metrics(result, None) is not None


async def test_generate_only_stops_after_generation(tiny: Path, tmp_path: Path) -> None:
    async with FakeLLM(api_key=API_KEY) as llm:
        code, log, _, out = await _run_trainer(llm.base_url, tmp_path, tiny, generate_only=True)
    assert code == 0, log[-4000:]
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result["status"] == "succeeded" and result["generateOnly"] is True
    assert "model" not in result and "metrics" not in result
    assert not (out / "model").exists() and not (out / "checkpoints").exists()
    train = load_dataset(str(out / "dataset" / "train.json"))
    base = "pvc://finetune-models/runs/team-a/docs-adapter"
    assert result["dataset"]["trainUri"] == f"{base}/dataset/train.json"
    assert result["dataset"]["trainQueries"] == len(train.queries) > 0
    assert result["generation"]["requests"] == len(llm.chat_requests) > 0
    assert "load model" not in log


async def test_unreachable_llm_is_a_retryable_failure(tiny: Path, tmp_path: Path) -> None:
    async with FakeLLM() as llm:
        url = llm.base_url  # closed when the block ends: nothing listens there any more
    code, log, _, _ = await _run_trainer(url, tmp_path, tiny, generate_only=True, max_retries=0)
    assert code == 1, log[-4000:]
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result["status"] == "failed" and url.split("//")[1].split("/")[0] in result["message"]
