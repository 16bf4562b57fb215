"""Progress reporting: one Reporter, throttled, fanned out to pluggable sinks.

Sinks: the FinetuneJob status subresource (JSON merge patch, background thread), a tqdm bar for
local runs, and a JSON-lines file. A sink failure is logged and never stops training.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from finetune_operator.api.common import API_VERSION
from finetune_operator.api.trainerconfig import JobRef, ReportSpec

log = logging.getLogger(__name__)

_CAMEL = {"total_steps": "totalSteps", "eta_seconds": "etaSeconds", "update_time": "updateTime"}


class Sink(Protocol):
    def emit(self, progress: dict[str, Any], checkpoints: list[dict[str, Any]] | None) -> None: ...

    def close(self) -> None: ...


def to_api_progress(progress: dict[str, Any]) -> dict[str, Any]:
    """Progress with the API's camelCase keys, derived percent/summary and an update time."""
    out: dict[str, Any] = {_CAMEL.get(k, k): v for k, v in progress.items() if v is not None}
    step, total = out.get("step"), out.get("totalSteps")
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        pct = min(100, int(100 * step / total))
        out.setdefault("percent", pct)
        out.setdefault("summary", f"{step}/{total} ({pct}%)")
    if "etaSeconds" in out:
        out["etaSeconds"] = max(0, int(out["etaSeconds"]))
    out.setdefault("updateTime", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


class Reporter:
    """Throttles progress reports (at most one per `interval_seconds`, forced ones excepted)."""

    def __init__(self, sinks: list[Sink], interval_seconds: float = 5.0) -> None:
        self.sinks = sinks
        self.interval = interval_seconds
        self._last = float("-inf")
        self._pending: tuple[dict[str, Any], list[dict[str, Any]] | None] | None = None

    def report(
        self, progress: dict[str, Any], checkpoints: list[dict[str, Any]] | None = None, force: bool = False
    ) -> bool:
        """Send the report now, or keep it for later if one was sent too recently. True if sent."""
        now = time.monotonic()
        if not force and checkpoints is None and now - self._last < self.interval:
            self._pending = (progress, checkpoints)
            return False
        self._last = now
        self._pending = None
        api = to_api_progress(progress)
        for sink in self.sinks:
            try:
                sink.emit(api, checkpoints)
            except Exception:
                log.warning("progress sink %s failed", type(sink).__name__, exc_info=True)
        return True

    def flush(self) -> None:
        if self._pending is not None:
            self.report(*self._pending, force=True)

    def close(self) -> None:
        self.flush()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.warning("closing progress sink %s failed", type(sink).__name__, exc_info=True)


def status_patch(progress: dict[str, Any], checkpoints: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The merge patch body for the FinetuneJob status subresource."""
    status: dict[str, Any] = {"progress": progress}
    if checkpoints:
        status["checkpoints"] = {"latest": checkpoints[-1], "items": checkpoints[-20:]}
    return {"status": status}


class StatusSink:
    """PATCHes the FinetuneJob status from a background thread (latest report wins)."""

    def __init__(self, spec: ReportSpec, job: JobRef, timeout: float = 10.0) -> None:
        if not spec.api_server:
            raise ValueError("report.apiServer is required for the status sink")
        self.url = (
            f"{spec.api_server.rstrip('/')}/apis/{API_VERSION}/namespaces/{job.namespace}"
            f"/finetunejobs/{job.name}/status"
        )
        self.spec = spec
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="status-sink", daemon=True)
        self._thread.start()

    def _context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https://"):
            return None
        if self.spec.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=self.spec.ca_path)

    def _send(self, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        if self.spec.token_path:
            token = Path(self.spec.token_path).read_text(encoding="utf-8").strip()
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="PATCH"
        )
        with urllib.request.urlopen(req, timeout=self.timeout, context=self._context()) as resp:
            resp.read()

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            # Coalesce: only the newest queued report matters.
            while body is not None and not self._queue.empty():
                nxt = self._queue.get()
                if nxt is None:
                    self._try(body)
                    return
                body = nxt
            if body is None:
                return
            self._try(body)

    def _try(self, body: dict[str, Any]) -> None:
        try:
            self._send(body)
        except Exception as exc:  # never crash training; never log the token
            log.warning("status report to %s failed: %s", self.url, type(exc).__name__)

    def emit(self, progress: dict[str, Any], checkpoints: list[dict[str, Any]] | None) -> None:
        self._queue.put(status_patch(progress, checkpoints))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=self.timeout + 1)


class JsonlSink:
    """Appends each report to `<output_dir>/progress.jsonl`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, progress: dict[str, Any], checkpoints: list[dict[str, Any]] | None) -> None:
        line = {"progress": progress, "checkpoints": checkpoints} if checkpoints else {"progress": progress}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def close(self) -> None:
        return None


class TqdmSink:
    """A progress bar on stderr for local runs."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._desc = ""

    def emit(self, progress: dict[str, Any], checkpoints: list[dict[str, Any]] | None) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        if progress.get("stage") == "generate":  # dataset generation: percent of the chunks done
            if progress.get("percent") is None:
                return
            self._bar_for("generate", 100, "%", tqdm)
            self._bar.n = int(progress["percent"])
            self._bar.refresh()
            return
        total, step = progress.get("totalSteps"), progress.get("step")
        if total is None or step is None:
            return
        self._bar_for("train", total, "step", tqdm)
        self._bar.n = step
        postfix = {"epoch": f"{progress.get('epoch', 0):.2f}"}
        if progress.get("loss") is not None:
            postfix["loss"] = f"{progress['loss']:.4f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def _bar_for(self, desc: str, total: int, unit: str, tqdm: Any) -> None:
        if self._bar is not None and self._desc != desc:
            self.close()
        if self._bar is None:
            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
            self._desc = desc

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
