"""Checkpoint directories `<root>/checkpoint-<step>`: atomic writes, listing, validation, rotation, signals.

Atomic: a checkpoint is written into a staging directory `<root>/.tmp-checkpoint-<step>` and renamed to
`checkpoint-<step>` only once every file is written and flushed (`atomic_checkpoint`, and for the
transformers Trainer `AtomicCheckpointsMixin`). A SIGKILL at any point leaves either the previous
checkpoints only, or the new one complete; never a `checkpoint-<step>` that resume rejects. Resume
(`latest_valid_checkpoint`) removes leftover staging directories first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
STAGING_PREFIX = ".tmp-checkpoint-"  # a checkpoint being written (never matches `checkpoint-*`)
REPLACED_PREFIX = ".old-checkpoint-"  # a checkpoint of the same step being replaced by a newer write
# names earlier versions used for a checkpoint being written
_LEFTOVER = re.compile(
    r"^(\.tmp-checkpoint-\d+|\.old-checkpoint-\d+|checkpoint-\d+\.partial|tmp-checkpoint-\d+)$"
)


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"checkpoint-{step}"


def staging_dir(root: Path, step: int) -> Path:
    return root / f"{STAGING_PREFIX}{step}"


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and directories on some platforms) refuse fsync
        pass
    finally:
        os.close(fd)


def commit_checkpoint(staged: Path, final: Path) -> Path:
    """Publish a fully written staging directory as `final` (a rename, atomic on one filesystem).

    Files are flushed first, so that a node crash right after the rename cannot expose empty files.
    An existing `final` (the same step written again, e.g. on SIGTERM) is moved aside and removed after."""
    for f in staged.rglob("*"):
        if f.is_file():
            _fsync(f)
    _fsync(staged)
    replaced = None
    if final.exists():
        replaced = final.with_name(f"{REPLACED_PREFIX}{final.name.removeprefix('checkpoint-')}")
        shutil.rmtree(replaced, ignore_errors=True)
        final.rename(replaced)
    staged.rename(final)
    _fsync(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return final


@contextlib.contextmanager
def atomic_checkpoint(root: Path, step: int) -> Iterator[Path]:
    """Write checkpoint `step`: yields a fresh staging directory; on a normal exit it becomes
    `<root>/checkpoint-<step>`, on an exception it is removed."""
    staged = staging_dir(root, step)
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    commit_checkpoint(staged, checkpoint_dir(root, step))


def clean_staging(root: Path) -> list[Path]:
    """Remove what an interrupted checkpoint write left under root (staging dirs); return what was removed.

    A checkpoint moved aside for a rewrite of the same step whose new copy never landed is put back."""
    if not root.is_dir():
        return []
    removed = []
    for child in sorted(root.iterdir()):
        if not _LEFTOVER.match(child.name):
            continue
        if child.name.startswith(REPLACED_PREFIX):
            final = checkpoint_dir(root, int(child.name.removeprefix(REPLACED_PREFIX)))
            if not final.exists():
                child.rename(final)
                log.warning("restored checkpoint %s (its rewrite was interrupted)", final)
                continue
        log.warning("removing %s left by an interrupted checkpoint write", child)
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
    return removed


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
    """The newest checkpoint that loads; corrupt or partial newer ones are removed (or skipped), and so are
    the staging directories of interrupted writes."""
    if remove_invalid:
        clean_staging(root)
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


class AtomicCheckpointsMixin:
    """Mixed into a `transformers.Trainer` subclass (first base): the Trainer's own `_save_checkpoint`
    writes into a staging directory, which is renamed to `checkpoint-<step>` once complete; rotation
    (`save_total_limit`) runs after the rename, so the previous checkpoint is only deleted once the new one
    is in place. The Trainer's loop is untouched. With torch.distributed, every rank writes its files
    (RNG state) first; the process that saves renames."""

    _staging_run_dir: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_run_dir is not None:
            return self._staging_run_dir
        return str(super()._get_output_dir(trial))  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        trainer: Any = self
        run_dir = Path(self._get_output_dir(trial))
        step = int(trainer.state.global_step)
        staging_run = run_dir / f"{STAGING_PREFIX}{step}"  # the Trainer writes staging_run/checkpoint-<step>
        if trainer.args.should_save:
            shutil.rmtree(staging_run, ignore_errors=True)
        _barrier()
        self._staging_run_dir = str(staging_run)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging_run_dir = None
        _barrier()
        if trainer.args.should_save:
            commit_checkpoint(checkpoint_dir(staging_run, step), checkpoint_dir(run_dir, step))
            shutil.rmtree(staging_run, ignore_errors=True)
            limit = trainer.args.save_total_limit
            if limit:
                rotate_checkpoints(run_dir, int(limit))
        _barrier()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


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
