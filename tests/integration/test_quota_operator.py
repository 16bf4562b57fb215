"""TrainingQuota admission with the real kopf operator against the emulated API server.

Limits are checked from the emulator's full write history (every committed write, in order), never by
sampling: the admitted GPUs are recomputed after every write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration.operator_support import (
    GPU,
    NS,
    data_config_map,
    register_quota_admission,
    result_json,
    st_job,
)

from finetune_operator.quota import ADMITTED_AT

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _quota_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    register_quota_admission(monkeypatch)


def gpu_job(name: str, gpus: int = 1, priority_class: str | None = None) -> dict[str, Any]:
    body = st_job(name)
    placement = body["spec"]["placement"]
    placement["resources"]["gpu"] = {"count": gpus, "resourceName": GPU}
    # The global batch splits evenly over the pod's processes (one per GPU): 12 fits 1, 2, 3 and 4 GPUs.
    body["spec"]["engine"]["sentenceTransformers"]["batchSize"] = 12
    if priority_class:
        placement["priorityClassName"] = priority_class
    return body


def quota(name: str, gpus: int, **limits: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "TrainingQuota",
        "metadata": {"name": name},
        "spec": {"limits": {"gpus": [{"resourceName": GPU, "count": gpus}], **limits}},
    }


def admitted_gpu_timeline(emu: Any) -> list[int]:
    """Admitted, unfinished GPUs after every write of the history."""
    held: dict[str, int] = {}
    out: list[int] = []
    for record in emu.history:
        if record.plural == "finetunejobs":
            obj = record.object
            meta = obj["metadata"]
            phase = (obj.get("status") or {}).get("phase")
            holds = (
                record.event != "DELETED"
                and ADMITTED_AT in (meta.get("annotations") or {})
                and phase not in ("Succeeded", "Failed")
                and not meta.get("deletionTimestamp")
            )
            gpu = obj["spec"]["placement"]["resources"]["gpu"]["count"]
            if holds:
                held[meta["uid"]] = gpu
            else:
                held.pop(meta["uid"], None)
        out.append(sum(held.values()))
    return out


def admission_order(emu: Any) -> list[str]:
    """FinetuneJob names in the order their admission was written."""
    seen: list[str] = []
    for record in emu.history:
        if (
            record.plural == "finetunejobs"
            and record.name not in seen
            and ADMITTED_AT in (record.object["metadata"].get("annotations") or {})
        ):
            seen.append(record.name)
    return seen


def phase_of(emu: Any, name: str) -> str | None:
    obj = emu.store.get("finetunejobs", NS, name) or {}
    return (obj.get("status") or {}).get("phase")


@contextlib.asynccontextmanager
async def kubelet_loop(
    emu: Any, kubelet: Any, hold: Callable[[], bool] = lambda: False
) -> AsyncIterator[None]:
    """Drive every trainer pod to Succeeded (while `hold()` is false)."""

    async def loop() -> None:
        while True:
            if not hold():
                for pod in await kubelet.pods(NS, phase="Pending"):
                    if pod["metadata"].get("deletionTimestamp"):
                        continue
                    name = pod["metadata"]["labels"]["job-name"].rsplit("-a", 1)[0]
                    with contextlib.suppress(Exception):
                        await kubelet.succeed(pod, message=result_json(name))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def all_phases(emu: Any, names: list[str], phase: str, timeout: float) -> None:
    await eventually(lambda: all(phase_of(emu, n) == phase for n in names), timeout=timeout, interval=0.2)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_300_jobs_never_exceed_4_gpus(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    await operator_factory(resync_period_seconds=30.0)
    await data_config_map(cluster)
    await cluster.create(quota("gpus", 4))
    names = [f"j{i:03d}" for i in range(300)]
    await asyncio.gather(*(cluster.create(gpu_job(n, gpus=1 + i % 2)) for i, n in enumerate(names)))
    async with kubelet_loop(cluster, kubelet):
        await all_phases(cluster, names, "Succeeded", timeout=540)
    timeline = admitted_gpu_timeline(cluster)
    assert max(timeline) <= 4
    assert max(timeline) >= 3  # the quota was actually used
    assert len(admission_order(cluster)) == 300


@pytest.mark.timeout(120)
async def test_priority_never_fits_and_quota_raised(
    cluster: Any, operator_factory: Any, kubelet: Any
) -> None:
    cluster.store.register(_priority_class_def())
    await cluster.create(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "high"},
            "value": 1000,
        }
    )
    await operator_factory()
    await data_config_map(cluster)
    await cluster.create(quota("team", 2))
    await cluster.create(gpu_job("huge", gpus=3))
    for i in range(4):
        await cluster.create(gpu_job(f"low{i}", gpus=1))
    await eventually(lambda: phase_of(cluster, "low1") == "Queued" or phase_of(cluster, "low2") == "Queued")
    await cluster.create(gpu_job("vip", gpus=2, priority_class="high"))
    # never-fits: Failed with ExceedsQuota, naming the quota and the limit
    await eventually(lambda: phase_of(cluster, "huge") == "Failed")
    status = cluster.store.get("finetunejobs", NS, "huge")["status"]
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert admitted["reason"] == "ExceedsQuota"
    assert "TrainingQuota team: job needs 3 nvidia.com/gpu but the limit is 2" in admitted["message"]
    queued = cluster.store.get("finetunejobs", NS, "vip")
    await eventually(lambda: (cluster.store.get("finetunejobs", NS, "vip").get("status") or {}).get("phase"))
    running_lows = admission_order(cluster)
    assert running_lows == ["low0", "low1"]
    del queued
    # free capacity: the high-priority job goes first although it was created last
    async with kubelet_loop(cluster, kubelet):
        await eventually(lambda: "vip" in admission_order(cluster), timeout=30)
        assert admission_order(cluster)[:3] == ["low0", "low1", "vip"]
        # quota raised mid-way: the rest are admitted at once
        raised = quota("team", 8)
        current = cluster.store.get("trainingquotas", None, "team")
        await cluster.patch("trainingquotas", None, "team", {"spec": raised["spec"]})
        del current
        await all_phases(cluster, ["low0", "low1", "low2", "low3", "vip"], "Succeeded", timeout=60)
    assert max(admitted_gpu_timeline(cluster)) <= 8
    # the quota's status follows the last job's end on the controller's next pass
    await eventually(
        lambda: (
            cluster.store.get("trainingquotas", None, "team")["status"]["usageSummary"]
            == "nvidia.com/gpu 0/8"
        ),
        timeout=30,
    )
    tq = cluster.store.get("trainingquotas", None, "team")
    assert tq["status"]["conditions"][0]["type"] == "Ready"


@pytest.mark.timeout(120)
async def test_operator_restart_mid_way(cluster: Any, operator_factory: Any, kubelet: Any) -> None:
    op = await operator_factory()
    await data_config_map(cluster)
    await cluster.create(quota("gpus", 2))
    names = [f"r{i}" for i in range(8)]
    for n in names:
        await cluster.create(gpu_job(n))
    await eventually(lambda: len(admission_order(cluster)) == 2)
    await op.restart()
    await asyncio.sleep(1.0)
    assert len(admission_order(cluster)) == 2  # the restarted operator recomputed usage: no over-admission
    async with kubelet_loop(cluster, kubelet):
        await all_phases(cluster, names, "Succeeded", timeout=90)
    assert max(admitted_gpu_timeline(cluster)) <= 2
    assert admission_order(cluster) == names


def _priority_class_def() -> Any:
    from finetune_operator.local.semantics import ResourceDef

    return ResourceDef(
        group="scheduling.k8s.io",
        version="v1",
        plural="priorityclasses",
        kind="PriorityClass",
        singular="priorityclass",
        namespaced=False,
        short_names=("pc",),
        status_subresource=False,
        has_generation=False,
        initial_status=None,
    )
