"""DDP rows of the sentence-transformers engine: one process (plain) against torchrun at world size 1 (what
the launcher and the process group cost) and at every world size of 2, 4, 8 that the machine's GPUs allow.

    python3 bench/gpu_trainer.py ddp --out $OUT        # on a GPU machine (after `prepare`)
    .venv/bin/python bench/gpu_trainer.py ddp --smoke  # CPU check of the whole script: gloo, world 1 and 2

Every row is the trainer's own `finetune train` on the same bench set (bench/make_sample_data.py), one epoch
at the same global batch (batchSize is global: each of W processes gets batchSize / W pairs a step, and
MultipleNegativesRankingLoss gathers across them, so the loss is the same function); world sizes > 1 are
launched as the operator launches them (`python -m finetune_trainer.distributed --standalone --nnodes=1
--nproc-per-node=W`). Reported beside each other: the trainer's training wall time (its train() call), pairs/s,
MFU against the device's bf16 peak and its TF32 peak (6 x params x tokens / time / peak, whole-machine peak at
world size W), and MRR@10 after training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH, LR = 512, 3e-4  # the GPU sweep's fastest row of one process
SMOKE_BATCH, SMOKE_LR = 16, 1e-4
ENTRY = "import sys; from finetune_trainer.cli import main; sys.exit(main(sys.argv[1:]))"


def _train_argv(model: str, data: Path, out: Path, batch: float, lr: float) -> list[str]:
    return [
        *("train", "--engine", "sentence-transformers", "--model", model),
        *("--train", str(data / "train.json"), "--val", str(data / "val.json")),
        *("--output", str(out), "--epochs", "1", "--batch-size", str(int(batch))),
        *("--learning-rate", str(lr), "--checkpoint-steps", "100000", "--no-progress", "--seed", "42"),
    ]


def _row(
    label: str, world: int | None, model: str, data: Path, work: Path, batch: int, lr: float
) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"ddp-{label}-", dir=work))
    script = out / "entry.py"
    script.write_text(ENTRY.replace("; ", "\n") + "\n", encoding="utf-8")
    argv = _train_argv(model, data, out / "run", batch, lr)
    if world is None:
        cmd = [sys.executable, str(script), *argv]
    else:
        launch = [sys.executable, "-m", "finetune_trainer.distributed", "--standalone", "--nnodes=1"]
        cmd = [*launch, f"--nproc-per-node={world}", str(script), *argv]
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=3600)
    whole = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: exit {proc.returncode}: {proc.stderr[-1500:]}")
    result = json.loads((out / "run" / "result.json").read_text())
    return {
        "row": label,
        "worldSize": world or 1,
        "torchrun": world is not None,
        "batchSize": batch,
        "perProcessBatch": batch // (world or 1),
        "wallSeconds": result["wallSeconds"],
        "processSeconds": round(whole, 3),
        "steps": result["steps"],
        "trainLoss": result["trainLoss"],
        "mrrBefore": result["metrics"]["before"]["mrrAt10"],
        "mrrAfter": result["metrics"]["after"]["mrrAt10"],
    }


def run_ddp(smoke: bool, model: Path, pairs: int, dataset: Any, peak_of: Any, mfu: Any) -> dict[str, Any]:
    """The rows; `dataset`, `peak_of` and `mfu` are gpu_trainer's helpers (bench set, peaks, MFU)."""
    import torch

    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_of(name) if cuda else None
    work = Path(tempfile.mkdtemp(prefix="gpu-ddp-"))
    bench = dataset(work, "data", 64 if smoke else pairs, str(model))
    batch, lr = (SMOKE_BATCH, SMOKE_LR) if smoke else (BATCH, LR)
    plan: list[tuple[str, int | None]] = [("plain", None), ("torchrun-1", 1)]
    worlds = [2] if smoke else [w for w in (2, 4, 8) if w <= gpus]
    plan += [(f"torchrun-{w}", w) for w in worlds]
    doc: dict[str, Any] = {"device": name, "gpus": gpus, "pairs": bench["pairs"], "rows": [], "errors": []}
    if not cuda and not smoke:
        doc["errors"].append("no CUDA device: the GPU rows are not measured here (use --smoke on CPU)")
        return doc
    for label, world in plan:
        try:
            row = _row(label, world, str(model), bench["path"], work, batch, lr)
        except Exception as exc:
            doc["errors"].append({label: str(exc)[-1500:]})
            continue
        wall, w = row["wallSeconds"], row["worldSize"]
        row["pairsPerSecond"] = round(bench["pairs"] / wall, 1) if wall else None
        row["mfuVsBf16PeakPct"] = mfu(bench["flops"], wall, peak[0] * w if peak else None)
        row["mfuVsTf32PeakPct"] = mfu(bench["flops"], wall, peak[2] * w if peak else None)
        doc["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    plain = next((r for r in doc["rows"] if r["row"] == "plain"), None)
    for row in doc["rows"]:
        if plain and row["pairsPerSecond"] and plain["pairsPerSecond"]:
            row["speedupVsPlain"] = round(row["pairsPerSecond"] / plain["pairsPerSecond"], 3)
    if gpus < 2 and not smoke:
        doc["notMeasured"] = "multi-GPU rows: this machine has fewer than 2 GPUs"
    return doc
