"""`finetune local` on the examples/llm jobs: emulator + real operator + the real trainer (TRL + PEFT) on CPU,
with the base model on the `models` PVC replaced by a tiny random Llama."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.e2e.local_support import ROOT, local_argv, run_local, write_manifests
from tests.llm_fixtures import copy_tiny_llama

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLE = ROOT / "examples" / "llm"
MODEL = "qwen2.5-0.5b-instruct"  # the path examples/llm names on the models PVC


def _run_local(tmp: Path, job_file: Path, dataset_file: Path, **engine: object) -> tuple[Path, str]:
    job = yaml.safe_load(job_file.read_text())
    job["spec"]["engine"]["llm"].update(engine)
    job["spec"]["placement"] = {"resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"}}
    manifests = write_manifests(
        tmp,
        {
            "job.yaml": yaml.safe_dump(job),
            "dataset.yaml": dataset_file.read_text(),
            "pvc.yaml": (EXAMPLE / "pvc.yaml").read_text(),
        },
    )
    workdir = tmp / "work"
    copy_tiny_llama(workdir / "pvc" / "models" / MODEL)
    proc = run_local(
        manifests,
        workdir,
        env={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp),
        },
    )
    name = job["metadata"]["name"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"default/{name}" in proc.stdout and "Succeeded" in proc.stdout
    assert "loss " in proc.stdout  # the summary table shows the validation loss before -> after
    return workdir / "pvc" / "finetune-output" / "llm" / "default" / name, proc.stdout


def test_finetune_local_llm_sft_example(tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, stdout = _run_local(
        tmp_path, EXAMPLE / "finetunejob.yaml", EXAMPLE / "dataset.yaml", learningRate=0.05, epochs=4
    )
    result = json.loads((out / "result.json").read_text())
    assert result["model"]["format"] == "hf-causal-lm"  # merge: true in the example
    assert result["model"]["storageUri"] == "pvc://finetune-output/llm/default/llm-sft/model/merged"
    assert result["model"]["baseModel"] == f"pvc://models/{MODEL}"
    assert "pvc://finetune-output/llm/default/llm-sft/model/merged" in stdout  # status.model.storageUri
    before, after = result["metrics"]["before"], result["metrics"]["after"]
    assert after["loss"] < before["loss"], (before, after)
    torch.set_num_threads(1)
    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "work" / "pvc" / "models" / MODEL))
    peft = PeftModel.from_pretrained(base, str(out / "model"))
    assert peft.active_adapter == "default"


def test_finetune_local_llm_dpo_example(tmp_path: Path) -> None:
    out, _ = _run_local(
        tmp_path,
        EXAMPLE / "dpo" / "finetunejob.yaml",
        EXAMPLE / "dpo" / "dataset.yaml",
        learningRate=0.05,
        epochs=6,
        beta=0.5,
    )
    result = json.loads((out / "result.json").read_text())
    assert result["model"]["format"] == "peft-lora"
    metrics = result["metrics"]
    assert metrics["after"]["preferenceMargin"] > metrics["before"]["preferenceMargin"], metrics
    assert (out / "model" / "adapter_model.safetensors").is_file()


def test_finetune_local_llm_sigkill_resumes_to_the_same_steps(tmp_path: Path) -> None:
    """The trainer pod's process SIGKILLed after its first checkpoint: the operator retries the attempt, which
    resumes from that checkpoint and ends at the planned step count."""
    import os
    import signal
    import time

    import psutil

    job = yaml.safe_load((EXAMPLE / "finetunejob.yaml").read_text())
    llm = job["spec"]["engine"]["llm"]
    llm.update({"epochs": 12, "batchSize": 1, "learningRate": 0.02, "merge": False})
    job["spec"]["output"]["checkpointSteps"] = 20
    job["spec"]["placement"] = {"resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"}}
    manifests = write_manifests(
        tmp_path,
        {
            "job.yaml": yaml.safe_dump(job),
            "dataset.yaml": (EXAMPLE / "dataset.yaml").read_text(),
            "pvc.yaml": (EXAMPLE / "pvc.yaml").read_text(),
        },
    )
    workdir = tmp_path / "work"
    copy_tiny_llama(workdir / "pvc" / "models" / MODEL)
    out = workdir / "pvc" / "finetune-output" / "llm" / "default" / "llm-sft"
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        local_argv(manifests, workdir, 500),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if list(out.glob("checkpoints/checkpoint-*/trainer_state.json")):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    if "finetune_trainer" in " ".join(child.cmdline()):
                        os.kill(child.pid, signal.SIGKILL)
                        killed = True
                break
            time.sleep(0.05)
        stdout, _ = proc.communicate(timeout=540)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "no trainer process to kill after the first checkpoint"
    assert proc.returncode == 0, stdout[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["attempt"] == 2 and result["resumedFrom"] >= 20
    assert result["steps"] == result["totalSteps"] == 12 * 14  # 14 training examples, batch 1, 12 epochs
