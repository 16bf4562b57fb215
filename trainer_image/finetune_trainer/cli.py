"""Command line of the trainer: `finetune train`, `finetune eval` (and `finetune dataset`).

No torch at import time: the operator image imports this module without torch installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

ENGINES = ("sentence-transformers", "adapter")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "filelock", "fsspec", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main_config(argv: list[str]) -> int:
    """`python -m finetune_trainer --config PATH` (the in-cluster entrypoint)."""
    parser = argparse.ArgumentParser(
        prog="python -m finetune_trainer",
        description="Run one FinetuneJob attempt from a TrainerConfig JSON file.",
    )
    parser.add_argument("--config", required=True, help="TrainerConfig JSON (rendered by the operator).")
    parser.add_argument("--progress-bar", action="store_true", help="Also show a progress bar on stderr.")
    args = parser.parse_args(argv)
    _setup_logging()
    from pydantic import ValidationError

    from finetune_operator.api.trainerconfig import EXIT_INVALID

    from .locations import ConfigError, load_config

    try:
        # FINETUNE_ATTEMPT, FINETUNE_PATH_MAP and FINETUNE_TERMINATION_LOG apply on top of the file
        cfg = load_config(args.config)
    except (OSError, ValidationError, ConfigError) as exc:
        print(f"invalid trainer config {args.config}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return _run(cfg, args.progress_bar)


def _run(cfg: Any, progress_bar: bool) -> int:
    from .checkpoints import StopFlag
    from .steps import run

    stop = StopFlag()
    stop.install()
    return run(cfg, progress_bar=progress_bar, stop=stop)


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune train",
        description="Finetune an embedding model on this machine, from a FinetuneJob manifest (-f) or flags. "
        "Shows a progress bar; prints the result JSON as the last line of stdout. Re-running with the same "
        "--output resumes from the newest checkpoint.",
    )
    p.add_argument("-f", "--file", help="A FinetuneJob manifest (YAML or JSON); flags below override it.")
    p.add_argument("--engine", choices=ENGINES, help="Training engine (default: sentence-transformers).")
    p.add_argument("--train", help="Training data: EmbeddingQA JSON path, http(s):// URL or s3:// URI.")
    p.add_argument("--val", help="Validation data (default: hold out part of --train).")
    p.add_argument("--model", help="Model id or local dir (default: all-MiniLM-L6-v2, bundled).")
    p.add_argument("--output", help="Output dir or s3:// URI (default: ./finetune-output/<name>).")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--adapter", choices=("linear", "two-layer"), help="Adapter engine: adapter shape.")
    p.add_argument(
        "--checkpoint-steps", type=int, default=None, help="Checkpoint every N steps (default 100)."
    )
    p.add_argument("--keep-checkpoints", type=int, default=None, help="Keep the newest K checkpoints.")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--patience",
        type=int,
        help="Stop after this many validation evaluations without improvement (0: never early).",
    )
    p.add_argument("--eval-steps", type=int, help="Evaluate every N steps (default: once per epoch).")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_config(args: argparse.Namespace) -> Any:
    """A TrainerConfig from a manifest and/or flags."""
    import yaml

    from finetune_operator.api.errors import parse_job
    from finetune_operator.api.finetunejob import FinetuneJobSpec
    from finetune_operator.api.trainerconfig import JobRef, TrainerConfig

    name, namespace = "local", "default"
    if args.file:
        body = yaml.safe_load(Path(args.file).read_text(encoding="utf-8"))
        job = parse_job(body)
        spec = job.spec
        name = job.metadata.name if getattr(job, "metadata", None) and job.metadata.name else name
        namespace = getattr(job.metadata, "namespace", None) or namespace
        engine = spec.engine.model_dump(by_alias=True, exclude_none=True)
        if args.engine:
            kind = "sentenceTransformers" if args.engine == "sentence-transformers" else "adapter"
            if kind not in engine:
                engine = {kind: {}}
    else:
        spec = None
        kind = "adapter" if args.engine == "adapter" else "sentenceTransformers"
        engine = {kind: {}}
    ((kind, eng),) = engine.items()
    if args.model:
        eng["model" if kind == "sentenceTransformers" else "baseModel"] = args.model
    elif "model" not in eng and "baseModel" not in eng:
        eng["model" if kind == "sentenceTransformers" else "baseModel"] = (
            "sentence-transformers/all-MiniLM-L6-v2"
        )
    for flag, key in (("epochs", "epochs"), ("batch_size", "batchSize"), ("learning_rate", "learningRate")):
        if getattr(args, flag) is not None:
            eng[key] = getattr(args, flag)
    for flag, key in (("patience", "patience"), ("eval_steps", "steps")):
        if getattr(args, flag, None) is not None:
            eng.setdefault("evaluation", {})[key] = getattr(args, flag)
    if args.adapter and kind == "adapter":
        eng.setdefault("adapter", {})["kind"] = "linear" if args.adapter == "linear" else "twoLayer"
    spec_body = spec.to_json() if spec is not None else {}
    spec_body["engine"] = {kind: eng}
    if args.seed is not None:
        spec_body["seed"] = args.seed
    spec_body.setdefault("output", {"storageUri": f"pvc://local/{name}"})
    if args.train and args.train.startswith(("http://", "https://", "s3://")):
        spec_body.setdefault("dataset", {"train": {"url": args.train}})
    spec_body.setdefault("dataset", {"train": {"pvc": {"claimName": "local", "path": "train.json"}}})
    full_spec = FinetuneJobSpec.model_validate(spec_body)

    def data(which: str, flag: str | None) -> str | None:
        if flag:
            return flag
        ds = full_spec.dataset
        src = getattr(ds, which) if ds is not None else None
        if src is None:
            return None
        if src.url:
            return str(src.url)
        raise SystemExit(f"finetune train: spec.dataset.{which} is not a URL; pass --{which[:5]} PATH")

    train = data("train", args.train)
    if not train:
        raise SystemExit("finetune train: give --train PATH (or a manifest with spec.dataset.train.url)")
    out_spec = full_spec.output
    checkpoint_steps = args.checkpoint_steps or (out_spec.checkpoint_steps if out_spec else None) or 100
    keep = args.keep_checkpoints or (out_spec.keep_checkpoints if out_spec else 3)
    output = args.output or str(Path("finetune-output") / name)
    if not output.startswith("s3://"):
        output = str(Path(output).resolve())
    return TrainerConfig(
        job=JobRef(namespace=namespace, name=name),
        spec=full_spec,
        train=train,
        validation=data("validation", args.val),
        output_dir=output,
        output_uri=output,
        checkpoint_steps=checkpoint_steps,
        keep_checkpoints=keep,
        result_path=None,
    )


def train_main(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from pydantic import ValidationError

    from finetune_operator.api.trainerconfig import EXIT_INVALID

    try:
        cfg = build_config(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"finetune train: invalid job: {exc}", file=sys.stderr)
        return EXIT_INVALID
    code = _run(cfg, progress_bar=not args.no_progress)
    result = Path(cfg.output_dir) / "result.json"
    if not cfg.output_dir.startswith("s3://") and result.is_file():
        print(result.read_text(encoding="utf-8").strip(), flush=True)
    return code


def eval_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="finetune eval",
        description="Retrieval metrics of a model on a dataset "
        "(hit rate @1/@5, MRR@10, NDCG@10) as JSON. Adapter models apply to queries only.",
    )
    p.add_argument("--model", required=True, help="Model dir (a trained output's model/ dir) or model id.")
    p.add_argument("--data", required=True, help="EmbeddingQA JSON (path, URL or s3:// URI).")
    p.add_argument(
        "--base-model", help="Base model for a bare adapter dir (config.json + pytorch_model.bin)."
    )
    args = p.parse_args(argv)
    _setup_logging()
    from .data import DatasetError, load_dataset, validate_dataset

    try:
        ds = load_dataset(args.data)
        validate_dataset(ds, args.data)
    except DatasetError as exc:
        print(f"invalid: {exc.message}", file=sys.stderr)
        return 3
    print(json.dumps(evaluate_path(args.model, ds, args.base_model)), flush=True)
    return 0


def evaluate_path(model: str, ds: Any, base_model: str | None = None) -> dict[str, Any]:
    import torch

    from .adapter import load_reference_layout
    from .metrics import eval_indices, retrieval_metrics
    from .models import load_model

    path = Path(model)
    bare_adapter = (
        (path / "config.json").is_file()
        and (path / "pytorch_model.bin").is_file()
        and not (path / "modules.json").is_file()
    )
    if bare_adapter:
        adapter = load_reference_layout(path)
        base = load_model(base_model or "sentence-transformers/all-MiniLM-L6-v2")
        qids, dids, relevant = eval_indices(ds)
        q = base.encode([ds.queries[i] for i in qids], convert_to_tensor=True).cpu().clone()
        d = base.encode([ds.corpus[i] for i in dids], convert_to_tensor=True).cpu()
        with torch.no_grad():
            q = adapter(q)
        return retrieval_metrics(q, d, relevant)
    from .metrics import evaluate_model

    trust = (path / "router_config.json").is_file()  # our own adapter module may sit on the query route
    from sentence_transformers import SentenceTransformer

    from .models import device, resolve_model

    st = SentenceTransformer(resolve_model(model), device=device(), trust_remote_code=trust)
    return evaluate_model(st, ds)


def main(argv: list[str]) -> int:
    """Dispatch `train`, `eval` and `dataset`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: finetune {train,eval,dataset} ...  (finetune <command> --help for options)")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        return train_main(rest)
    if cmd == "eval":
        return eval_main(rest)
    if cmd == "dataset":
        try:
            from . import dataset_cli  # type: ignore[attr-defined]
        except ImportError as exc:
            print(f"finetune dataset: not available in this installation ({exc})", file=sys.stderr)
            return 2
        return int(dataset_cli.main(rest))
    print(f"finetune: unknown command {cmd!r}; use train, eval or dataset", file=sys.stderr)
    return 2
