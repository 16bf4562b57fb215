"""Quota admission throughput: 1000 FinetuneJobs under one TrainingQuota, admitted as capacity frees.

Two modes, both against the emulated API server over HTTP:

* ``--mode controller`` (default): the QuotaController (the I/O side the operator's admission hook calls)
  with its job cache fed by a FinetuneJob watch, as the operator's kopf event handler feeds it. Each job is
  "finished" (status patched to Succeeded) as soon as its admission shows on the watch; that event frees
  capacity, and the controller runs the next pass from the event (no polling, no resync).
* ``--mode operator``: the full kopf operator (handlers + quota admission) in a thread with its own event
  loop; a fake kubelet drives every trainer pod to Succeeded. Includes the whole trainer lifecycle, so it is
  bound by the operator's reconcile, not by admission.

The jobs are created first; admissions/s is jobs / (start of admission .. last admission write). Admission
wait is measured from each job's creation to the write of its admission, both read from the emulator's
write history.

    .venv/bin/python bench/quota_admission.py [--jobs 1000] [--gpus 50] [--mode controller|operator]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import threading
import time
from typing import Any

import aiohttp

from finetune_operator.api.crdgen import all_crds
from finetune_operator.config import Settings
from finetune_operator.kube import Connection, KubeClient
from finetune_operator.local.emulator import Emulator
from finetune_operator.quota import ADMITTED_AT
from finetune_operator.quota_controller import QuotaController

RESULT = json.dumps(
    {"status": "succeeded", "metrics": {"before": {"mrrAt10": 0.5}, "after": {"mrrAt10": 0.6}}}
)


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "engine": {"sentenceTransformers": {}},
            "dataset": {"train": {"configMap": {"name": "data", "key": "train.json"}}},
            "output": {"storageUri": "pvc://models/runs"},
            "placement": {"resources": {"gpu": {"count": 1}}},
        },
    }


def quota(gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "TrainingQuota",
        "metadata": {"name": "bench"},
        "spec": {"limits": {"gpus": [{"resourceName": "nvidia.com/gpu", "count": gpus}]}},
    }


async def watch_jobs(url: str, since: str, on_event: Any) -> None:
    """Stream FinetuneJob watch events (what kopf's watcher does for the operator)."""
    path = f"{url}/apis/finetune.dev/v1alpha1/namespaces/default/finetunejobs"
    async with (
        aiohttp.ClientSession() as session,
        session.get(path, params={"watch": "1", "resourceVersion": since}) as resp,
    ):
        async for line in resp.content:
            if line.strip():
                event = json.loads(line)
                on_event(event["type"], event["object"])


async def run_controller(emu: Emulator, n_jobs: int) -> dict[str, float]:
    kube = KubeClient(Connection(server=emu.url, insecure=True))
    controller = QuotaController(kube, Settings(api_server=emu.url, metrics_port=0, health_port=0))
    finished: set[str] = set()
    done = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def finish(name: str) -> None:  # the trainer finishes at once: capacity frees
        await kube.patch_status("finetunejobs", "default", name, {"phase": "Succeeded"})

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        controller.observe(obj, deleted=kind == "DELETED")
        name = obj["metadata"]["name"]
        if ADMITTED_AT in (obj["metadata"].get("annotations") or {}) and name not in finished:
            finished.add(name)
            task = asyncio.get_running_loop().create_task(finish(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if len(finished) == n_jobs:
                done.set()

    since = str((await kube.request("GET", "list", "finetunejobs", "default"))["metadata"]["resourceVersion"])
    watcher = asyncio.create_task(watch_jobs(emu.url, since, on_event))
    await controller.on_capacity_change()  # the first pass (the operator's start-up resume does this)
    await done.wait()
    await asyncio.gather(*tasks)
    watcher.cancel()
    with contextlib.suppress(BaseException):
        await watcher
    await controller.close()
    await kube.close()
    return {"passes": controller.passes, "relists": controller.relists}


async def run_operator(emu: Emulator, n_jobs: int) -> dict[str, float]:
    from finetune_operator import main as operator_main
    from finetune_operator.handlers import build_registry
    from finetune_operator.handlers.context import OperatorContext
    from finetune_operator.local.controllers import FakeKubelet
    from finetune_operator.quota_handlers import register_quota

    def build(settings: Any) -> Any:  # idempotent if build_registry registers quota admission itself
        registry = build_registry(settings)
        register_quota(registry)
        return registry

    operator_main.build_registry = build  # type: ignore[attr-defined]
    settings = Settings(
        api_server=emu.url,
        api_insecure=True,
        trainer_api_server=emu.url,
        metrics_port=0,
        health_port=0,
        namespaces=["default"],
        resync_period_seconds=300.0,
    )
    ctx = OperatorContext(settings=settings)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            operator_main.operator_task(settings, ready_flag=ready, stop_flag=stop, ctx=ctx)
        ),
        daemon=True,
    )
    thread.start()
    await asyncio.to_thread(ready.wait, 30)
    kubelet = FakeKubelet(emu)
    while sum(_phase(o) == "Succeeded" for o in emu.store.list("finetunejobs", "default")) < n_jobs:
        for pod in await kubelet.pods("default", phase="Pending"):
            if not pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(Exception):
                    await kubelet.succeed(pod, message=RESULT)
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.to_thread(thread.join, 30)
    quota = ctx.quota
    return {"passes": quota.passes, "relists": quota.relists} if isinstance(quota, QuotaController) else {}


def _phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


async def run(n_jobs: int, gpus: int, mode: str) -> dict[str, float]:
    async with Emulator(crds=list(all_crds().values()), controllers=mode == "operator", seed=1) as emu:
        await emu.create(quota(gpus))
        if mode == "operator":
            await emu.create(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "data", "namespace": "default"},
                    "data": {"train.json": "[]"},
                }
            )
        for i in range(n_jobs):
            await emu.create(job(f"j{i:04d}"))
        started = time.monotonic()  # the emulator's history is stamped with time.monotonic()
        if mode == "operator":
            extra = await run_operator(emu, n_jobs)
        else:
            extra = await run_controller(emu, n_jobs)
        created: dict[str, float] = {}
        admitted: list[float] = []
        waits: list[float] = []
        for rec in emu.history:
            if rec.plural != "finetunejobs":
                continue
            if rec.verb == "create":
                created[rec.name] = rec.timestamp
            elif ADMITTED_AT in (rec.object["metadata"].get("annotations") or {}) and rec.name in created:
                admitted.append(rec.timestamp)
                waits.append(rec.timestamp - created.pop(rec.name))
    elapsed = max(admitted) - started
    quantiles = statistics.quantiles(waits, n=100)
    return {
        "mode": mode,  # type: ignore[dict-item]
        "jobs": n_jobs,
        "gpus": gpus,
        "seconds": elapsed,
        "admissions_per_second": len(waits) / elapsed,
        **extra,
        "p50_wait_s": quantiles[49],
        "p99_wait_s": quantiles[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=50)
    parser.add_argument("--mode", choices=("controller", "operator"), default="controller")
    args = parser.parse_args()
    out = asyncio.run(run(args.jobs, args.gpus, args.mode))
    for key, value in out.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
