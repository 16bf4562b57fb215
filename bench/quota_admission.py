"""Quota admission throughput: 1000 FinetuneJobs under one TrainingQuota, admitted as capacity frees.

Runs the QuotaController (the I/O side the operator's admission hook calls) against the emulated API server
over HTTP: every pass LISTs the cluster, decides, and persists admissions with resourceVersion preconditions.
Jobs are "finished" (status patched to Succeeded) as soon as they are admitted, which frees capacity and
triggers the next pass, like the operator's FinetuneJob watch does. Admission wait is measured from each
job's creation to the write of its admission, both read from the emulator's write history.

    .venv/bin/python bench/quota_admission.py [--jobs 1000] [--gpus 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from finetune_operator.api.crdgen import all_crds
from finetune_operator.config import Settings
from finetune_operator.kube import Connection, KubeClient
from finetune_operator.local.emulator import Emulator
from finetune_operator.quota import ADMITTED_AT
from finetune_operator.quota_controller import QuotaController


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


async def run(n_jobs: int, gpus: int) -> dict[str, float]:
    async with Emulator(crds=list(all_crds().values()), controllers=False, seed=1) as emu:
        kube = KubeClient(Connection(server=emu.url, insecure=True))
        controller = QuotaController(kube, Settings(api_server=emu.url, metrics_port=0, health_port=0))
        await emu.create(
            {
                "apiVersion": "finetune.dev/v1alpha1",
                "kind": "TrainingQuota",
                "metadata": {"name": "bench"},
                "spec": {"limits": {"gpus": [{"resourceName": "nvidia.com/gpu", "count": gpus}]}},
            }
        )
        for i in range(n_jobs):
            await emu.create(job(f"j{i:04d}"))
        finished: set[str] = set()
        started = time.perf_counter()
        while len(finished) < n_jobs:
            result = await controller.on_capacity_change()
            admitted = [d for d in result.decisions.values() if d.admitted and d.name not in finished]
            for d in admitted:  # the trainer finishes at once: capacity frees
                await kube.patch_status("finetunejobs", d.namespace, d.name, {"phase": "Succeeded"})
                finished.add(d.name)
        elapsed = time.perf_counter() - started
        created: dict[str, float] = {}
        waits: list[float] = []
        for rec in emu.history:
            if rec.plural != "finetunejobs":
                continue
            if rec.verb == "create":
                created[rec.name] = rec.timestamp
            elif ADMITTED_AT in (rec.object["metadata"].get("annotations") or {}) and rec.name in created:
                waits.append(rec.timestamp - created.pop(rec.name))
        await controller.close()
        await kube.close()
    quantiles = statistics.quantiles(waits, n=100)
    return {
        "jobs": n_jobs,
        "gpus": gpus,
        "seconds": elapsed,
        "admissions_per_second": n_jobs / elapsed,
        "passes": controller.passes,
        "p50_wait_s": quantiles[49],
        "p99_wait_s": quantiles[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=50)
    args = parser.parse_args()
    out = asyncio.run(run(args.jobs, args.gpus))
    for key, value in out.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
