"""Checkpoint directories `<root>/checkpoint-<step>`: listing, validation, rotation, signals."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import threading
import zipfile
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"checkpoint-{step}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint dirs under root, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _NAME.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return sorted(found)


def _file_ok(path: Path) -> bool:
    try:
        if path.suffix in (".pt", ".bin", ".pth"):
            with zipfile.ZipFile(path) as zf:
                return zf.testzip() is None
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
                    fh.get_slice(key)
            return True
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
            return True
    except Exception:
        return False
    return True


def is_valid_checkpoint(path: Path, required: tuple[str, ...]) -> bool:
    """Every required file exists, and every weight/state/JSON file in the dir reads back."""
    if not all((path / name).is_file() for name in required):
        return False
    return all(_file_ok(f) for f in path.rglob("*") if f.is_file())


def latest_valid_checkpoint(
    root: Path, required: tuple[str, ...], remove_invalid: bool = True
) -> Path | None:
    """The newest checkpoint that loads; corrupt or partial newer ones are removed (or skipped)."""
    for step, path in reversed(list_checkpoints(root)):
        if is_valid_checkpoint(path, required):
            return path
        log.warning("checkpoint at step %d (%s) is corrupt or partial; skipping it", step, path)
        if remove_invalid:
            shutil.rmtree(path, ignore_errors=True)
    return None


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; return the deleted paths."""
    ckpts = list_checkpoints(root)
    doomed = [p for _, p in ckpts[: max(0, len(ckpts) - keep)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class StopFlag:
    """Set by SIGTERM (and SIGINT): training saves a checkpoint at the next step end and stops."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self._event.set()

    def install(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.warning("received signal %d: saving a checkpoint and stopping", signum)
            self.set(signum)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


class Interrupted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint."""

    def __init__(self, step: int, detail: str = "checkpoint saved") -> None:
        super().__init__(f"interrupted at step {step}; {detail}")
        self.step = step
