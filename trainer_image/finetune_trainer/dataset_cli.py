"""`finetune dataset ...`: generate, validate and split EmbeddingQA datasets on this machine.

    finetune dataset generate --docs DIR --llm-base-url URL --model M [--output DIR] ...
    finetune dataset validate FILE
    finetune dataset split FILE --validation-fraction F --output DIR

Exit codes: 0 success, 3 invalid input or data (the message names the field, document or ids),
1 a failure worth retrying (an unreachable or overloaded LLM), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from finetune_operator.api.errors import format_validation_error
from finetune_operator.api.finetunejob import DEFAULT_QA_PROMPT, GenerateSpec

EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_USAGE = 2
EXIT_INVALID = 3

# GenerateSpec fields (camelCase) -> the flag that sets them, for error messages.
_FLAGS = {
    "llm.baseUrl": "--llm-base-url",
    "llm.model": "--model",
    "llm.temperature": "--temperature",
    "llm.maxConcurrency": "--concurrency",
    "llm.maxRetries": "--max-retries",
    "questionsPerChunk": "--questions-per-chunk",
    "promptTemplate": "--prompt-file",
    "chunkSize": "--chunk-size",
    "chunkOverlap": "--chunk-overlap",
    "validationFraction": "--validation-fraction",
    "saveEvery": "--save-every",
}

log = logging.getLogger("finetune_trainer.dataset")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune dataset",
        description="Generate, validate or split EmbeddingQA datasets (the JSON of the reference's "
        "EmbeddingQAFinetuneDataset: queries, corpus, relevant_docs, mode).",
        epilog="Exit codes: 0 ok, 1 retryable failure (LLM unreachable), 2 usage, 3 invalid input or data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser(
        "generate",
        help="ask an LLM for questions about document chunks; write train.json and val.json",
        description="Chunk documents on sentence boundaries and ask an OpenAI-compatible chat-completions "
        "endpoint for questions about each chunk. Writes train.json, val.json, "
        "generation_report.json and a resume state to --output; running the same command "
        "again continues where an interrupted run stopped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument(
        "--docs",
        action="append",
        required=True,
        metavar="PATH_OR_URL",
        help="a document or a directory of documents (.txt, .md, .html, .pdf), an http(s):// URL "
        "or an s3:// URI; repeat for more",
    )
    gen.add_argument(
        "--llm-base-url",
        required=True,
        metavar="URL",
        help="base URL of the OpenAI-compatible API, e.g. http://localhost:8000/v1",
    )
    gen.add_argument("--model", required=True, metavar="M", help="model name to request")
    gen.add_argument(
        "--api-key-env",
        default="FINETUNE_LLM_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key (the key is never read from the "
        "command line); unset means no key, as for a local vLLM",
    )
    gen.add_argument(
        "--api-key-file",
        default=None,
        metavar="FILE",
        help="read the API key from this file instead of --api-key-env",
    )
    gen.add_argument(
        "--questions-per-chunk", type=int, default=2, metavar="N", help="questions asked per chunk"
    )
    gen.add_argument("--chunk-size", type=int, default=1024, metavar="N", help="chunk size in characters")
    gen.add_argument(
        "--chunk-overlap", type=int, default=128, metavar="N", help="overlap between chunks in characters"
    )
    gen.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="fraction of chunks (with their questions) held out for validation; 0 for none",
    )
    gen.add_argument(
        "--output", default="dataset", metavar="DIR", help="output directory (local path or s3:// URI)"
    )
    gen.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight at once")
    gen.add_argument(
        "--max-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries per request on 429, 5xx and connection errors, with exponential backoff",
    )
    gen.add_argument("--temperature", type=float, default=0.2, metavar="T", help="sampling temperature")
    gen.add_argument(
        "--prompt-file",
        default=None,
        metavar="FILE",
        help="prompt template with {context_str} and {num_questions_per_chunk} "
        "(default: the reference's prompt)",
    )
    gen.add_argument(
        "--save-every", type=int, default=20, metavar="N", help="save partial results every N chunks"
    )
    gen.add_argument("--seed", type=int, default=42, help="seed of the train/validation split")

    val = sub.add_parser(
        "validate",
        help="check a dataset file and print its sizes",
        description="Check that every query has relevant docs that exist in the corpus, "
        "and that no text is empty. Prints a JSON report; exits 3 naming the "
        "offending ids when the dataset is invalid.",
    )
    val.add_argument("file", metavar="FILE", help="dataset JSON: local path, http(s):// URL or s3:// URI")

    spl = sub.add_parser(
        "split",
        help="split a dataset into train.json and val.json by query",
        description="Split a dataset by query, deterministically (both halves keep the "
        "whole corpus). Writes DIR/train.json and DIR/val.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    spl.add_argument("file", metavar="FILE", help="dataset JSON: local path, http(s):// URL or s3:// URI")
    spl.add_argument(
        "--validation-fraction",
        type=float,
        required=True,
        metavar="F",
        help="fraction of queries for validation, in (0, 1)",
    )
    spl.add_argument("--output", required=True, metavar="DIR", help="output directory")
    spl.add_argument("--seed", type=int, default=42, help="seed of the shuffle")
    return parser


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _build_spec(args: argparse.Namespace) -> GenerateSpec:
    prompt = DEFAULT_QA_PROMPT
    if args.prompt_file:
        try:
            prompt = Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--prompt-file {args.prompt_file}: cannot be read: {exc.strerror}") from exc
    body: dict[str, Any] = {
        # the documents come from --docs; GenerateSpec needs a source, this one is never read
        "documents": [{"configMap": {"name": "local", "key": "docs"}}],
        "llm": {
            "baseUrl": args.llm_base_url,
            "model": args.model,
            "temperature": args.temperature,
            "maxConcurrency": args.concurrency,
            "maxRetries": args.max_retries,
        },
        "questionsPerChunk": args.questions_per_chunk,
        "promptTemplate": prompt,
        "chunkSize": args.chunk_size,
        "chunkOverlap": args.chunk_overlap,
        "validationFraction": args.validation_fraction,
        "saveEvery": args.save_every,
    }
    try:
        return GenerateSpec.model_validate(body)
    except ValidationError as exc:
        parts = [
            f"{_FLAGS.get(path, path) if path else 'options'}: {msg}"
            for path, msg in format_validation_error(exc)
        ]
        raise ValueError("; ".join(parts)) from None


def _generate(args: argparse.Namespace) -> int:
    from finetune_trainer.generate import GenerationError, generate_dataset, read_api_key

    try:
        spec = _build_spec(args)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_INVALID
    try:
        api_key = read_api_key(args.api_key_env, args.api_key_file)
        result = asyncio.run(generate_dataset(spec, list(args.docs), args.output, api_key, seed=args.seed))
    except GenerationError as exc:
        _err(exc.message)
        return EXIT_RETRYABLE if exc.retryable else EXIT_INVALID
    except KeyboardInterrupt:
        _err(f"interrupted; run the same command again to continue (state in {args.output})")
        return 130
    print(json.dumps(result.report, indent=2))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from finetune_trainer.data import DatasetError, load_dataset, validate_dataset

    try:
        ds = load_dataset(args.file)
        report = validate_dataset(ds, args.file)
    except DatasetError as exc:
        _err(exc.message)
        if exc.offending_ids:
            print(
                json.dumps(
                    {"valid": False, "error": exc.message, "offending_ids": exc.offending_ids}, indent=2
                )
            )
        return EXIT_INVALID
    used = {d for docs in ds.relevant_docs.values() for d in docs}
    seen: dict[str, str] = {}
    duplicates = []
    for qid, text in ds.queries.items():
        key = " ".join(text.casefold().split())
        if key in seen:
            duplicates.append(qid)
        seen.setdefault(key, qid)
    out = {
        "valid": True,
        "file": args.file,
        **report.model_dump(),
        "unreferenced_corpus_docs": len(set(ds.corpus) - used),
        "duplicate_queries": len(duplicates),
    }
    print(json.dumps(out, indent=2))
    return EXIT_OK


def _split(args: argparse.Namespace) -> int:
    from finetune_trainer.data import (
        DatasetError,
        load_dataset,
        save_dataset,
        split_dataset,
        validate_dataset,
    )

    if not 0 < args.validation_fraction < 1:
        _err(f"--validation-fraction must be between 0 and 1 (exclusive), got {args.validation_fraction}")
        return EXIT_INVALID
    try:
        ds = load_dataset(args.file)
        validate_dataset(ds, args.file)
        train, val = split_dataset(ds, args.validation_fraction, args.seed)
        out = args.output.rstrip("/")
        save_dataset(train, f"{out}/train.json")
        save_dataset(val, f"{out}/val.json")
    except DatasetError as exc:
        _err(exc.message)
        return EXIT_INVALID
    except OSError as exc:
        _err(f"--output {args.output}: cannot write: {exc}")
        return EXIT_INVALID
    print(
        json.dumps(
            {
                "train_path": f"{out}/train.json",
                "validation_path": f"{out}/val.json",
                "train_queries": len(train.queries),
                "validation_queries": len(val.queries),
                "corpus": len(ds.corpus),
            },
            indent=2,
        )
    )
    return EXIT_OK


def main(argv: list[str]) -> int:
    """Run `finetune dataset ARGV...`; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    handlers = {"generate": _generate, "validate": _validate, "split": _split}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
