"""The job's output location and what the trainer writes there: checkpoints synced to s3://, result.json and
the bounded termination message; an earlier job's adapter fetched for spec.engine.adapter.continueFrom."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from finetune_operator.api.trainerconfig import TrainerConfig

from . import distributed
from .data import DatasetError, s3_storage_options
from .locations import resolve_location

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 4096


def _fs(uri: str, cfg: TrainerConfig) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(uri, **(s3_storage_options(cfg.s3) if uri.startswith("s3://") else {}))


class Output:
    """The job's output location; s3:// outputs are written locally, then uploaded."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.remote = cfg.output_dir if cfg.output_dir.startswith("s3://") else None
        if self.remote is None:
            self.local = Path(cfg.output_dir)
        else:
            self.local = Path(tempfile.gettempdir()) / "finetune-output" / cfg.job.namespace / cfg.job.name
        self.local.mkdir(parents=True, exist_ok=True)

    def download_state(self) -> None:
        """Fetch existing checkpoints and the embedding cache from s3 so that a new attempt resumes."""
        if self.remote is None:
            return
        fs, root = _fs(self.remote, self.cfg)
        for sub in ("checkpoints", "cache"):
            if fs.exists(f"{root}/{sub}"):
                fs.get(f"{root}/{sub}", str(self.local / sub), recursive=True)

    def upload(self, sub: str = "") -> None:
        if self.remote is None:
            return
        fs, root = _fs(self.remote, self.cfg)
        src = self.local / sub if sub else self.local
        dst = f"{root}/{sub}" if sub else root
        if src.is_dir():
            fs.put(str(src), dst, recursive=True)
        elif src.is_file():
            fs.put_file(str(src), dst)

    def sync_checkpoint(self, step: int, path: Path) -> None:
        if self.remote is None:
            return
        self.upload(f"checkpoints/{path.name}")
        fs, root = _fs(self.remote, self.cfg)
        keep = {p.name for p in (self.local / "checkpoints").iterdir()}
        for remote in fs.ls(f"{root}/checkpoints", detail=False) if fs.exists(f"{root}/checkpoints") else []:
            if remote.rstrip("/").rsplit("/", 1)[-1] not in keep:
                fs.rm(remote, recursive=True)


def write_result(cfg: TrainerConfig, out: Output | None, result: dict[str, Any]) -> None:
    """result.json in full; the termination message bounded (the llm engine's generations go first)."""
    full = json.dumps(result, separators=(",", ":"))
    text = full
    if len(text.encode()) > MAX_RESULT_BYTES and "evaluation" in result:
        result = {k: v for k, v in result.items() if k != "evaluation"}
        text = json.dumps(result, separators=(",", ":"))
    while len(text.encode()) > MAX_RESULT_BYTES and result.get("checkpoints"):
        result["checkpoints"] = result["checkpoints"][1:]
        text = json.dumps(result, separators=(",", ":"))
    if len(text.encode()) > MAX_RESULT_BYTES and "message" in result:
        result["message"] = str(result["message"])[:3000]
        text = json.dumps(result, separators=(",", ":"))
    if out is not None and distributed.is_main():  # each pod's termination message, rank 0's result.json
        (out.local / "result.json").write_text(full + "\n", encoding="utf-8")
        try:
            out.upload("result.json")
        except Exception:
            log.warning("uploading result.json failed", exc_info=True)
    if cfg.result_path:
        try:
            Path(cfg.result_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write the termination message %s: %s", cfg.result_path, exc)


def fetch_adapter(uri: str, cfg: TrainerConfig) -> Path:
    """A local dir holding config.json + pytorch_model.bin of an earlier job's adapter."""
    loc = resolve_location(uri)
    if loc.startswith("s3://"):
        fs, root = _fs(loc, cfg)
        target = Path(tempfile.mkdtemp(prefix="continue-from-"))
        fs.get(root, str(target), recursive=True)
        loc = str(target)
    path = Path(loc)
    for cand in (path / "adapter", path / "model" / "adapter", path):
        if (cand / "config.json").is_file() and (cand / "pytorch_model.bin").is_file():
            return cand
    raise DatasetError(
        f"spec.engine.adapter.continueFrom: no adapter (config.json + pytorch_model.bin) at {uri}"
    )
