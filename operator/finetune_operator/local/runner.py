"""`finetune local FILE...`: FinetuneJobs on this machine, no cluster.

The emulated API server (with the generated CRDs), the real operator (in a thread with its own event loop,
as in a pod), and the local executor running trainer pods as processes. Applies the manifests, shows
progress bars from status.progress, and prints a table when every job has finished.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from finetune_operator.api.crdgen import all_crds
from finetune_operator.config import Settings
from finetune_operator.local.emulator import Emulator
from finetune_operator.local.executor import LocalExecutor
from finetune_operator.local.semantics import JsonDict

logger = logging.getLogger(__name__)

ACCEPTED_KINDS = ("FinetuneJob", "ConfigMap", "Secret", "PersistentVolumeClaim", "Namespace")


def load_manifests(files: list[Path]) -> list[JsonDict]:
    """Every YAML document in the files (directories: their *.yaml / *.yml files, sorted)."""
    paths: list[Path] = []
    for item in files:
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix in (".yaml", ".yml"))
        elif item.exists():
            paths.append(item)
        else:
            raise FileNotFoundError(f"no such file or directory: {item}")
    docs: list[JsonDict] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc:
                continue
            if not isinstance(doc, dict) or doc.get("kind") not in ACCEPTED_KINDS:
                kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                raise ValueError(f"{path}: unsupported kind {kind!r} (accepted: {', '.join(ACCEPTED_KINDS)})")
            docs.append(doc)
    order = {kind: i for i, kind in enumerate(("Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim"))}
    return sorted(docs, key=lambda d: order.get(str(d.get("kind")), 99))


def _metric(status: JsonDict, which: str, key: str = "mrrAt10") -> float | None:
    value = ((status.get("metrics") or {}).get(which) or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _duration(status: JsonDict) -> str:
    from datetime import datetime

    try:
        start = datetime.fromisoformat(str(status["startTime"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(status["completionTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return "-"
    return f"{(end - start).total_seconds():.0f}s"


def render_table(jobs: list[JsonDict]) -> str:
    rows = [("JOB", "ENGINE", "PHASE", "DURATION", "MRR@10 (llm: LOSS) BEFORE -> AFTER", "MODEL")]
    for job in jobs:
        status = job.get("status") or {}
        before, after = _metric(status, "before"), _metric(status, "after")
        if before is not None and after is not None:
            mrr = f"{before:.3f} -> {after:.3f} ({after - before:+.3f})"
        elif (lb := _metric(status, "before", "loss")) is not None and (
            la := _metric(status, "after", "loss")
        ) is not None:
            mrr = f"loss {lb:.3f} -> {la:.3f} ({la - lb:+.3f})"
        else:
            mrr = "-"
        model = (
            (status.get("model") or {}).get("storageUri") or (status.get("model") or {}).get("name") or "-"
        )
        rows.append(
            (
                f"{job['metadata'].get('namespace', 'default')}/{job['metadata']['name']}",
                str(status.get("engine") or "-"),
                str(status.get("phase") or "-"),
                _duration(status),
                mrr,
                str(model),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


class _Bars:
    """One tqdm bar per job, fed from status.progress."""

    def __init__(self, names: list[str], enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}
        if enabled:
            from tqdm import tqdm  # type: ignore[import-untyped]

            for i, name in enumerate(names):
                self.bars[name] = tqdm(
                    total=100,
                    desc=name,
                    position=i,
                    unit="%",
                    leave=True,
                    bar_format="{desc:<24} {percentage:3.0f}%|{bar}| {postfix}",
                )

    def update(self, name: str, status: JsonDict) -> None:
        bar = self.bars.get(name)
        if bar is None:
            return
        progress = status.get("progress") or {}
        percent = int(progress.get("percent") or (100 if status.get("phase") == "Succeeded" else 0))
        bar.n = percent
        bar.set_postfix_str(
            f"{status.get('phase', 'Pending')} {progress.get('stage') or ''}"
            f" {progress.get('summary') or ''}".strip(),
            refresh=False,
        )
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _start_operator(settings: Settings) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    from finetune_operator.main import operator_task

    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(operator_task(settings, ready_flag=ready, stop_flag=stop))
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="finetune-operator", daemon=True)
    thread.start()
    return thread, stop, errors


def local_settings(url: str, **overrides: Any) -> Settings:
    """The operator's settings for a local run against the emulator at `url` (no metrics/health ports,
    short resync and backoff, progress every second); `overrides` replace any of them."""
    values: dict[str, Any] = {
        "api_server": url,
        "api_insecure": True,
        "trainer_api_server": url,
        "metrics_port": 0,
        "health_port": 0,
        "resync_period_seconds": 5.0,
        "retry_backoff_seconds": 2.0,
        "termination_grace_period_seconds": 30,
        "progress_interval_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


async def _run(files: list[Path], timeout: float, workdir: Path, verbose: bool) -> int:
    docs = load_manifests(files)
    jobs = [d for d in docs if d.get("kind") == "FinetuneJob"]
    if not jobs:
        print("no FinetuneJob in the given files", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    async with Emulator(crds=list(all_crds().values())) as emu:
        settings = local_settings(emu.url)
        thread, stop, errors = _start_operator(settings)
        executor = LocalExecutor(emu, workdir)
        await executor.start()
        try:
            for doc in docs:
                if doc.get("kind") == "PersistentVolumeClaim":  # a local directory stands in for the volume
                    (workdir / "pvc" / doc["metadata"]["name"]).mkdir(parents=True, exist_ok=True)
                    continue
                await emu.create(doc)
            keys = [(j["metadata"].get("namespace") or "default", j["metadata"]["name"]) for j in jobs]
            bars = _Bars([name for _, name in keys], enabled=sys.stderr.isatty() or verbose)
            deadline = time.monotonic() + timeout
            final: list[JsonDict] = []
            try:
                while True:
                    if errors:
                        raise RuntimeError(f"the operator stopped: {errors[0]!r}")
                    final = [
                        emu.store.get("finetunejobs", ns, name) or {"metadata": {"name": name}}
                        for ns, name in keys
                    ]
                    for (_, name), job in zip(keys, final, strict=True):
                        bars.update(name, job.get("status") or {})
                    if all((j.get("status") or {}).get("phase") in ("Succeeded", "Failed") for j in final):
                        break
                    if time.monotonic() > deadline:
                        print(f"timed out after {timeout:.0f}s", file=sys.stderr)
                        break
                    await asyncio.sleep(0.5)
            finally:
                bars.close()
        finally:
            await executor.stop()
            stop.set()
            await asyncio.to_thread(thread.join, 30)
    print(render_table(final))
    for job in final:
        status = job.get("status") or {}
        if status.get("phase") == "Failed":
            print(f"{job['metadata']['name']}: {status.get('message')}", file=sys.stderr)
    print(f"pod logs and outputs: {workdir}/pods, {workdir}/pvc")
    return 0 if all((j.get("status") or {}).get("phase") == "Succeeded" for j in final) else 1


def run_local(files: list[Path], timeout: float, workdir: Path, verbose: bool) -> int:
    """Run the manifests' FinetuneJobs locally; 0 if all succeeded."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not verbose:
        for name in ("kopf", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return asyncio.run(_run(files, timeout, workdir, verbose))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
