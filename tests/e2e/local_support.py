"""Helpers of the `finetune local` end-to-end tests: a manifests folder and one run of the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_manifests(tmp: Path, files: dict[str, str]) -> Path:
    """`tmp/manifests/` with one file per name -> text."""
    manifests = tmp / "manifests"
    manifests.mkdir()
    for name, text in files.items():
        (manifests / name).write_text(text)
    return manifests


def local_argv(manifests: Path, workdir: Path, timeout: int) -> list[str]:
    """`finetune local MANIFESTS --workdir WORKDIR --timeout TIMEOUT` with this interpreter."""
    return [
        sys.executable,
        "-m",
        "finetune_operator.cli",
        "local",
        str(manifests),
        "--workdir",
        str(workdir),
        "--timeout",
        str(timeout),
    ]


def run_local(
    manifests: Path, workdir: Path, env: dict[str, str], timeout: int = 500, margin: int = 60
) -> subprocess.CompletedProcess[str]:
    """Run `finetune local` to the end (stdout and stderr captured apart); killed `margin` s after its timeout."""
    return subprocess.run(
        local_argv(manifests, workdir, timeout),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout + margin,
        env=env,
    )


async def run_local_async(
    manifests: Path, workdir: Path, env: dict[str, str], timeout: int = 500, margin: int = 60
) -> tuple[int, str]:
    """`run_local` without blocking the event loop (fake servers keep serving): exit code and stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        *local_argv(manifests, workdir, timeout),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout + margin)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
