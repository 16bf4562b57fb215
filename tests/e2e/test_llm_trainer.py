"""The llm engine's trainer on a tiny random Llama (CPU): the assistant-token loss falls, the adapter loads back
with PEFT, merged and unmerged models agree, SIGKILL + resume reaches the same step count, DPO trains, and
invalid data exits 3 with the per-line report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.llm_fixtures import tiny_llama, trainer_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
CMD = [sys.executable, "-m", "finetune_trainer", "--config"]


def _run(config: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, str(config)], env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def _result(tmp: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp / "out" / "result.json").read_text())
    return data


def test_sft_loss_falls_adapter_loads_merged_matches(tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    base_dir = tiny_llama()
    cfg = trainer_config(tmp_path, base_dir, epochs=4, learningRate=0.05, merge=True)
    proc = _run(cfg)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = _result(tmp_path)
    metrics = res["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["after"]["loss"] < metrics["before"]["loss"] - 0.05, metrics
    assert metrics["modelImproved"] is True and metrics["selectionMetric"] == "loss"
    assert res["model"] == {
        "storageUri": "pvc://out/x/default/tiny-llm/model/merged",
        "format": "hf-causal-lm",
        "baseModel": str(base_dir),
    }
    gens = res["evaluation"]["generations"]  # type: ignore[index]
    assert len(gens["before"]) == 3 and len(gens["after"]) == 3 and gens["after"][0]["reference"]
    # the termination message stays within Kubernetes' 4 KiB
    assert len((tmp_path / "termination-log").read_bytes()) <= 4096

    model_dir = tmp_path / "out" / "model"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (model_dir / name).is_file(), name
    assert json.loads((model_dir / "adapter_config.json").read_text())["r"] == 16
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert "{% generation %}" in tok.chat_template  # the chat template travels with the adapter
    msgs = [{"role": "user", "content": "What is LoRA?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    with torch.no_grad():
        base_logits = base(**ids).logits
    peft = PeftModel.from_pretrained(base, str(model_dir)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(model_dir / "merged")).eval()
    with torch.no_grad():
        a, b = peft(**ids).logits, merged(**ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert not torch.allclose(a, base_logits, atol=1e-4)  # the adapter changed the model


def _checkpoint_steps(out: Path) -> list[int]:
    return sorted(
        int(p.parent.name.removeprefix("checkpoint-"))
        for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
    )


@pytest.mark.slow
def test_sigkill_then_resume_reaches_same_steps(tmp_path: Path) -> None:
    base_dir = tiny_llama()
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()
    kw = {"epochs": 6, "batchSize": 2, "learningRate": 0.02}
    ref = _run(trainer_config(ref_dir, base_dir, **kw))
    assert ref.returncode == 0, ref.stderr[-4000:]
    total = _result(ref_dir)["steps"]

    cfg = trainer_config(run_dir, base_dir, **kw)
    proc = subprocess.Popen([*CMD, str(cfg)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not _checkpoint_steps(run_dir / "out") and time.monotonic() < deadline:
            assert proc.poll() is None, "the trainer finished before it could be killed"
            time.sleep(0.05)
        assert _checkpoint_steps(run_dir / "out"), "no checkpoint within 240 s"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = max(_checkpoint_steps(run_dir / "out"))
    assert killed_at < total  # type: ignore[operator]
    again = _run(cfg)
    assert again.returncode == 0, again.stderr[-4000:]
    res = _result(run_dir)
    assert res["steps"] == total and res["totalSteps"] == total
    assert res["resumedFrom"] is not None and int(res["resumedFrom"]) >= killed_at  # type: ignore[call-overload]
    assert "resuming from checkpoint" in again.stderr


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_4(tmp_path: Path) -> None:
    cfg = trainer_config(tmp_path, tiny_llama(), epochs=50, batchSize=1, learningRate=0.01)
    cfg_data = json.loads(cfg.read_text())
    cfg_data["checkpointSteps"] = 100000  # only the SIGTERM checkpoint
    cfg.write_text(json.dumps(cfg_data))
    proc = subprocess.Popen(
        [*CMD, str(cfg)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    progress = tmp_path / "out" / "progress.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and '"stage":"train"' not in (
        progress.read_text().replace(" ", "") if progress.exists() else ""
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-3000:]
    assert _checkpoint_steps(tmp_path / "out"), "SIGTERM saved no checkpoint"
    assert json.loads((tmp_path / "termination-log").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_dpo_trains_on_preference_data(tmp_path: Path) -> None:
    cfg = trainer_config(tmp_path, tiny_llama(), "dpo", epochs=6, learningRate=0.05, beta=0.5)
    proc = _run(cfg)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = _result(tmp_path)
    metrics = res["metrics"]
    assert isinstance(metrics, dict) and metrics["selectionMetric"] == "preferenceMargin"
    assert metrics["after"]["preferenceMargin"] > metrics["before"]["preferenceMargin"] + 0.1, metrics
    assert metrics["modelImproved"] is True
    assert res["model"]["format"] == "peft-lora"  # type: ignore[index]
    assert (tmp_path / "out" / "model" / "adapter_model.safetensors").is_file()


def test_invalid_lines_exit_3_with_the_per_line_report(tmp_path: Path) -> None:
    cfg = trainer_config(tmp_path, tiny_llama())
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[1] = '{"messages": [{"role": "user", "content": "no answer"}]}'
    lines[3] = "not json"
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    proc = _run(cfg)
    assert proc.returncode == 3, proc.stderr[-3000:]
    message = json.loads((tmp_path / "termination-log").read_text())["message"]
    assert "spec.dataset.train: invalid chat dataset: 2 errors" in message
    assert "line 2: example_missing_assistant_message" in message and "line 4: invalid_json" in message
    assert not (tmp_path / "out" / "checkpoints").exists()  # refused before any training


def test_dpo_with_sft_data_exits_3(tmp_path: Path) -> None:
    from tests.llm_fixtures import example_data

    cfg = trainer_config(tmp_path, tiny_llama(), "dpo")
    (tmp_path / "train.jsonl").write_text(example_data("sft")["train.jsonl"])
    proc = _run(cfg)
    assert proc.returncode == 3, proc.stderr[-3000:]
    message = json.loads((tmp_path / "termination-log").read_text())["message"]
    assert "invalid preference dataset" in message and "chat_line" in message


@pytest.mark.slow
def test_torchrun_two_cpu_processes_share_the_steps(tmp_path: Path) -> None:
    """torch.distributed on CPU (gloo, world size 2): each rank takes half of every epoch's batches."""
    cfg = trainer_config(tmp_path, tiny_llama(), epochs=2, batchSize=2)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_trainer.distributed",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29547",
            "-m",
            "finetune_trainer",
            "--config",
            str(cfg),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = _result(tmp_path)
    assert res["steps"] == res["totalSteps"] == 8  # 14 examples / (2 ranks x batch 2) -> 4 per epoch
    metrics = res["metrics"]
    assert isinstance(metrics, dict) and metrics["after"]["loss"] < metrics["before"]["loss"]
