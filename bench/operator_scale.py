"""Operator scale: N FinetuneJobs created at once against the emulated API server.

The operator runs as its own process (`finetune operator`, so its RSS is its own); trainer pods are driven
to Succeeded by this harness (a kubelet stand-in, no trainer). Prints: time until every job has its
trainer Job, time until all are Succeeded, p50/p99 creation -> trainer Job latency, operator peak RSS, and
API requests per job (non-watch requests sent by the operator: its own client and kopf).

    python bench/operator_scale.py --jobs 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from finetune_operator.api.crdgen import all_crds
from finetune_operator.local.controllers import FakeKubelet
from finetune_operator.local.emulator import Emulator
from finetune_operator.local.semantics import Selector

PROGRESS_SECONDS = 15.0
RESULT = json.dumps(
    {"status": "succeeded", "metrics": {"before": {"mrrAt10": 0.5}, "after": {"mrrAt10": 0.6}}}
)


def job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": f"bench-{i:05d}", "namespace": "default"},
        "spec": {
            "engine": {"adapter": {}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://models/bench"},
            "placement": {"resources": {"gpu": {"count": 0}}},
        },
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (load-independent, unlike the wall-clock figures)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(n: int, timeout: float, rate: float = 0.0) -> None:
    emu = Emulator(crds=list(all_crds().values()), keep_requests=False)
    requests: Counter[str] = Counter()
    kinds: Counter[str] = Counter()  # operator requests by verb, resource and subresource
    serve = emu.serve_http

    async def counting(raw: Any, parsed: Any) -> Any:
        if raw.query.get("watch") not in ("true", "1"):
            agent = raw.headers.get("User-Agent", "")
            who = "operator" if agent.startswith(("finetune-operator", "kopf")) else "other"
            requests[who] += 1
            if who == "operator":
                verb = raw.method if parsed.name or raw.method != "GET" else "LIST"
                sub = f"/{parsed.subresource}" if parsed.subresource else ""
                kinds[f"{verb} {parsed.plural}{sub}"] += 1
        return await serve(raw, parsed)

    emu.serve_http = counting  # type: ignore[method-assign]
    async with emu:
        env = {
            **os.environ,
            "FINETUNE_API_SERVER": emu.url,
            "FINETUNE_API_INSECURE": "true",
            "FINETUNE_METRICS_PORT": "0",
            "FINETUNE_HEALTH_PORT": "0",
            "FINETUNE_RESYNC_PERIOD_SECONDS": "300",
        }
        # the operator's log goes to a file: a pipe nobody reads fills up and blocks the operator
        log = tempfile.NamedTemporaryFile(prefix="operator-scale-", suffix=".log", delete=False)  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "finetune_operator.cli", "operator", "-n", "default"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        kubelet = FakeKubelet(emu)
        watcher = emu.store.watch(emu.store.resolve("", "v1", "pods"), Selector(), None)
        done_pods: set[str] = set()

        async def drive() -> None:
            while True:
                event = await watcher.queue.get()
                if event is None:
                    return
                pod = event["object"]
                uid = pod["metadata"]["uid"]
                if event["type"] == "ADDED" and uid not in done_pods:
                    done_pods.add(uid)
                    await kubelet.run(pod)
                    await kubelet.succeed(pod, message=RESULT)

        driver = asyncio.create_task(drive())
        # the jobs' phases, from a watch (listing every job each poll would copy them all)
        phase_of: dict[str, str | None] = {}
        job_watch = emu.store.watch(
            emu.store.resolve("finetune.dev", "v1alpha1", "finetunejobs"), Selector(), None
        )

        async def track() -> None:
            while (event := await job_watch.queue.get()) is not None:
                name = event["object"]["metadata"]["name"]
                if event["type"] == "DELETED":
                    phase_of.pop(name, None)
                else:
                    phase_of[name] = (event["object"].get("status") or {}).get("phase")

        tracker = asyncio.create_task(track())
        await emu.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "data"},
                "data": {"train.json": "{}"},
            }
        )
        await asyncio.sleep(3)  # let the operator start and list
        before = requests["operator"]
        cpu_before = cpu_seconds(proc.pid), time.process_time()
        kinds_before = Counter(kinds)
        t0 = time.monotonic()
        created_at: dict[str, float] = {}
        for i in range(n):
            body = job(i)
            await emu.create(body)
            created_at[f"{body['metadata']['name']}-a1"] = time.monotonic()
            if rate > 0:  # a steady arrival rate instead of one burst
                await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
        t_created = time.monotonic() - t0
        job_seen: dict[str, float] = {}
        all_jobs = all_done = None
        scanned = 0
        next_progress = t0 + PROGRESS_SECONDS
        while time.monotonic() - t0 < timeout:
            history = emu.history
            for rec in history[scanned:]:
                if rec.plural == "jobs" and rec.verb == "create" and rec.name not in job_seen:
                    job_seen[rec.name] = rec.timestamp
            scanned = len(history)
            if all_jobs is None and len(job_seen) >= n:
                all_jobs = max(job_seen.values()) - t0
            phases = Counter(phase_of.values())
            if phases.get("Succeeded", 0) >= n:
                all_done = time.monotonic() - t0
                break
            if time.monotonic() >= next_progress:  # partial numbers, in case the run is cut short
                next_progress += PROGRESS_SECONDS
                print(
                    f"[{time.monotonic() - t0:.0f}s] trainer Jobs {len(job_seen)}/{n},"
                    f" Succeeded {phases.get('Succeeded', 0)}/{n},"
                    f" operator requests {requests['operator'] - before}",
                    flush=True,
                )
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        used = requests["operator"] - before
        rss = peak_rss_mb(proc.pid)
        cpu = cpu_seconds(proc.pid) - cpu_before[0], time.process_time() - cpu_before[1]
        proc.terminate()
        proc.wait(30)
        log.close()
        warnings = Counter(
            line.split(" ", 3)[-1][:80]
            for line in Path(log.name).read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line
        )
        driver.cancel()
        tracker.cancel()
        lat = sorted(job_seen[k] - created_at[k] for k in job_seen if k in created_at)

    def p(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    arrival = f"{rate:g} jobs/s" if rate > 0 else "one burst"
    print(f"jobs: {n} (created in {t_created:.1f}s, {arrival})")
    print(
        f"time until every job has its trainer Job: {all_jobs:.1f}s" if all_jobs else "not all Jobs created"
    )
    print(
        f"time until all Succeeded: {all_done:.1f}s" if all_done else "not all Succeeded within the timeout"
    )
    print(
        f"creation -> trainer Job latency: p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms"
        f" (mean {statistics.fmean(lat) * 1000 if lat else float('nan'):.0f} ms)"
    )
    print(f"operator peak RSS: {rss:.0f} MB")
    print(
        f"CPU time from the first create: operator {cpu[0]:.1f} s ({cpu[0] / n * 1000:.1f} ms per job),"
        f" harness (emulated API server, controllers, kubelet) {cpu[1]:.1f} s"
    )
    print(f"API requests per job (operator, non-watch): {used / n:.1f}")
    for kind, count in sorted((kinds - kinds_before).items(), key=lambda kv: -kv[1]):
        print(f"  {kind}: {count / n:.2f}")
    print(f"operator log: {log.name} ({sum(warnings.values())} warning/error lines)")
    for line, count in warnings.most_common(5):
        print(f"  {count}x {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="create jobs at this many per second (default: all at once)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.timeout, args.rate))
