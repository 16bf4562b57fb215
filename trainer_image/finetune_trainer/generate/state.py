"""The resume state of a generation run: questions per chunk, keyed by the chunk's sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GenerationError

STATE_FILE = "generation_state.json"
STATE_VERSION = 1


def settings_fingerprint(model: str, prompt_template: str, questions_per_chunk: int) -> str:
    """What makes stored questions reusable: the same model, prompt and number of questions."""
    raw = json.dumps([model, prompt_template, questions_per_chunk], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass
class ChunkResult:
    """The questions generated for one chunk."""

    source: str
    questions: list[str]
    asked: int
    dropped_lines: int = 0
    duplicates: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "questions": self.questions,
            "asked": self.asked,
            "dropped_lines": self.dropped_lines,
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ChunkResult:
        return cls(
            source=str(raw["source"]),
            questions=[str(q) for q in raw["questions"]],
            asked=int(raw["asked"]),
            dropped_lines=int(raw.get("dropped_lines", 0)),
            duplicates=int(raw.get("duplicates", 0)),
        )


@dataclass
class GenerationState:
    """Everything a restarted run needs to skip the chunks already done."""

    fingerprint: str
    chunks: dict[str, ChunkResult] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)  # summed over earlier runs
    runs: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "runs": self.runs,
            "usage": self.usage,
            "chunks": {h: c.as_json() for h, c in self.chunks.items()},
        }


def state_location(output_dir: str) -> str:
    return f"{output_dir.rstrip('/')}/{STATE_FILE}"


def _is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def load_state(
    output_dir: str,
    fingerprint: str,
    storage_options: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> GenerationState:
    """The saved state, or a fresh one when there is none or it was made with other settings."""
    import fsspec

    location = state_location(output_dir)
    fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
    try:
        if not fs.exists(path):
            return GenerationState(fingerprint=fingerprint)
        with fs.open(path, "r", encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        if warnings is not None:
            warnings.append(f"resume state {location} unreadable ({exc}); starting over")
        return GenerationState(fingerprint=fingerprint)
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
        if warnings is not None:
            warnings.append(f"resume state {location} has an unknown format; starting over")
        return GenerationState(fingerprint=fingerprint)
    if raw.get("fingerprint") != fingerprint:
        if warnings is not None:
            warnings.append(
                f"resume state {location} was made with another model, prompt or number of "
                "questions; starting over"
            )
        return GenerationState(fingerprint=fingerprint)
    try:
        chunks = {str(h): ChunkResult.from_json(c) for h, c in raw.get("chunks", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        if warnings is not None:
            warnings.append(f"resume state {location} is damaged ({exc}); starting over")
        return GenerationState(fingerprint=fingerprint)
    usage = {str(k): int(v) for k, v in (raw.get("usage") or {}).items()}
    return GenerationState(fingerprint=fingerprint, chunks=chunks, usage=usage, runs=int(raw.get("runs", 0)))


def save_state(
    output_dir: str, state: GenerationState, storage_options: dict[str, Any] | None = None
) -> None:
    """Write the state; atomically (write then rename) on a local disk, so a kill never leaves half a file."""
    location = state_location(output_dir)
    payload = json.dumps(state.as_json(), ensure_ascii=False)
    try:
        if _is_local(location):
            path = Path(location.removeprefix("file://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".generation_state.", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(payload)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return
        import fsspec

        fs, rpath = fsspec.core.url_to_fs(location, **(storage_options or {}))
        with fs.open(rpath, "w", encoding="utf-8") as fh:
            fh.write(payload)
    except OSError as exc:
        raise GenerationError(f"cannot save the resume state to {location}: {exc}") from exc
