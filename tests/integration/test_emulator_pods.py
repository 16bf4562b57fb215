"""Pod lifecycle as the real control plane has it: the Job controller's tracking finalizer, graceful
deletion (deletionTimestamp first, the kubelet stops the container, then the object goes), the Eviction API
(DisruptionTarget before the delete), and the local executor acting as the kubelet of real processes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from emulator_support import call, eventually, job, pods_of

from finetune_operator.local.emulator import Emulator
from finetune_operator.local.executor import LocalExecutor
from finetune_operator.local.kubelet import NODE_NAME, FakeKubelet
from finetune_operator.local.pods import JOB_TRACKING_FINALIZER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

PODS = "/api/v1/namespaces/default/pods"


def _job_history(emu: Emulator, name: str) -> list[dict[str, Any]]:
    return [r.object for r in emu.history if r.plural == "jobs" and r.name == name]


async def test_job_pods_carry_the_tracking_finalizer_until_counted(emu: Emulator) -> None:
    await emu.create(job("ok"))
    (pod,) = await pods_of(emu, "ok")
    assert pod["metadata"]["finalizers"] == [JOB_TRACKING_FINALIZER]
    kubelet = FakeKubelet(emu)
    running = await kubelet.run(pod)
    assert running["spec"]["nodeName"] == NODE_NAME  # bound (pods/binding) before it runs
    assert running["metadata"]["finalizers"] == [JOB_TRACKING_FINALIZER]
    await kubelet.succeed(pod)

    async def released() -> dict[str, Any] | None:
        obj = emu.store.get("pods", "default", pod["metadata"]["name"])
        return obj if obj is not None and not obj["metadata"].get("finalizers") else None

    done = await eventually(released)
    assert done["status"]["phase"] == "Succeeded"  # accounted for, the pod itself stays
    statuses = [o.get("status") or {} for o in _job_history(emu, "ok")]
    # KEP-2307: first recorded as uncounted, then the finalizer goes, then the counter moves
    uncounted = [s for s in statuses if (s.get("uncountedTerminatedPods") or {}).get("succeeded")]
    assert uncounted and uncounted[0]["uncountedTerminatedPods"]["succeeded"] == [pod["metadata"]["uid"]]
    assert "succeeded" not in uncounted[0]
    assert statuses[-1]["succeeded"] == 1 and statuses[-1]["uncountedTerminatedPods"] == {}


async def _watch_until_deleted(http: aiohttp.ClientSession, params: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.get(PODS, params={"watch": "true", **params}) as resp:
        async for line in resp.content:
            if line.strip():
                events.append(json.loads(line))
                if events[-1]["type"] == "DELETED":
                    break
    return events


async def test_graceful_delete_sets_deletion_timestamp_first(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    await emu.create(job("g", backoffLimit=3))
    (pod,) = await pods_of(emu, "g")
    name = pod["metadata"]["name"]
    running = await FakeKubelet(emu).run(pod)
    params = {
        "resourceVersion": running["metadata"]["resourceVersion"],
        "fieldSelector": f"metadata.name={name}",
    }
    watching = asyncio.create_task(asyncio.wait_for(_watch_until_deleted(http, params), 5))
    await asyncio.sleep(0.05)
    status, body = await call(http, "DELETE", f"{PODS}/{name}", {"gracePeriodSeconds": 20})
    assert status == 200  # a pending deletion answers 200 with the object, as the real server
    assert body["metadata"]["deletionTimestamp"] and body["metadata"]["deletionGracePeriodSeconds"] == 20
    assert body["status"]["phase"] == "Running" and body["metadata"]["finalizers"] == [JOB_TRACKING_FINALIZER]
    events = await watching
    seen = [
        (e["type"], e["object"]["status"].get("phase"), bool(e["object"]["metadata"].get("finalizers")))
        for e in events
    ]
    # MODIFIED with deletionTimestamp while Running; the kubelet writes it terminal and the Job controller
    # (no podFailurePolicy: it counts a deleted pod at once) drops its finalizer, in either order; only a
    # terminal pod without finalizers is DELETED
    assert seen[0] == ("MODIFIED", "Running", True)
    assert seen[-1] == ("DELETED", "Failed", False)
    assert ("MODIFIED", "Running", False) in seen or ("MODIFIED", "Failed", True) in seen
    assert all(kind == "MODIFIED" for kind, _, _ in seen[:-1])
    assert events[0]["object"]["metadata"]["deletionTimestamp"]
    term = next(e["object"] for e in events if e["object"]["status"].get("phase") == "Failed")
    assert term["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    assert term["metadata"]["deletionTimestamp"]
    # without a podFailurePolicy a deleted pod that did not succeed counts as failed, and is replaced
    (second,) = await pods_of(emu, "g")
    assert second["metadata"]["name"] != name
    assert (emu.store.get("jobs", "default", "g") or {})["status"].get("failed") == 1


async def test_unbound_pod_is_removed_at_once(emu: Emulator, http: aiohttp.ClientSession) -> None:
    await emu.create(job("u", backoffLimit=3))
    (pod,) = await pods_of(emu, "u")
    name = pod["metadata"]["name"]
    _, body = await call(http, "DELETE", f"{PODS}/{name}")
    assert body["metadata"]["deletionGracePeriodSeconds"] == 0  # never scheduled: no kubelet to wait for
    await eventually(lambda: asyncio.sleep(0, emu.store.get("pods", "default", name) is None))


async def test_eviction_api_adds_disruption_target_before_the_delete(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    await emu.create(job("ev", backoffLimit=0, podFailurePolicy=policy))
    (pod,) = await pods_of(emu, "ev")
    name = pod["metadata"]["name"]
    await FakeKubelet(emu).run(pod)
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"},
    }
    status, body = await call(http, "POST", f"{PODS}/{name}/eviction", eviction)
    assert status == 201 and body["status"] == "Success"
    events = [r for r in emu.history if r.plural == "pods" and r.name == name]
    marked = next(i for i, r in enumerate(events) if r.subresource == "eviction")
    deleting = next(i for i, r in enumerate(events) if r.object["metadata"].get("deletionTimestamp"))
    assert marked < deleting
    cond = next(c for c in events[marked].object["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert (cond["status"], cond["reason"]) == ("True", "EvictionByEvictionAPI")
    assert not events[marked].object["metadata"].get("deletionTimestamp")
    # the podFailurePolicy's Ignore rule: not counted against backoffLimit 0, replaced once terminal
    (second,) = await pods_of(emu, "ev")
    assert second["metadata"]["name"] != name
    await eventually(lambda: asyncio.sleep(0, emu.store.get("pods", "default", name) is None))
    job_status = (emu.store.get("jobs", "default", "ev") or {})["status"]
    assert "failed" not in job_status and not any(
        c["type"] == "Failed" for c in job_status.get("conditions", [])
    )
    assert (await call(http, "POST", f"{PODS}/missing/eviction", eviction))[0] == 404


def _script_job(name: str, script: str, grace: int) -> dict[str, Any]:
    manifest = job(name, backoffLimit=0)
    spec = manifest["spec"]["template"]["spec"]
    spec["terminationGracePeriodSeconds"] = grace
    spec["containers"] = [{"name": "trainer", "image": "i", "command": ["python", "-c", script]}]
    return manifest


TRAP = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(4))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"


@pytest.mark.parametrize(("script", "grace", "code"), [(TRAP, 30, 4), (STUBBORN, 1, 137)])
async def test_local_executor_acts_on_deletion_timestamp(
    emu: Emulator, tmp_path: Path, script: str, grace: int, code: int
) -> None:
    async with LocalExecutor(emu, tmp_path, python=sys.executable):
        await emu.create(_script_job("x", script, grace))
        (pod,) = await pods_of(emu, "x", phase="Running")
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == "localhost"
        log = tmp_path / "pods" / "default" / name / "log.txt"
        if script is TRAP:
            await eventually(lambda: asyncio.sleep(0, log.exists() and "ready" in log.read_text()))
        else:
            await asyncio.sleep(0.5)  # let the interpreter install its SIG_IGN
        if script is TRAP:  # an eviction: DisruptionTarget, then the graceful delete
            await emu.evict("default", name)
        else:
            await emu.delete("pods", "default", name)  # graceful: the executor sees deletionTimestamp only
        await eventually(lambda: asyncio.sleep(0, emu.store.get("pods", "default", name) is None), timeout=10)
    records = [r.object for r in emu.history if r.plural == "pods" and r.name == name]
    final = next(o for o in records if (o.get("status") or {}).get("phase") == "Failed")
    assert final["metadata"]["deletionTimestamp"]
    assert final["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == code
    conditions = {c["type"] for c in final["status"]["conditions"]}
    assert "PodScheduled" in conditions  # the kubelet's status writes keep conditions others own
    assert ("DisruptionTarget" in conditions) == (script is TRAP)


async def test_foreground_deletion_waits_for_the_pods(emu: Emulator, http: aiohttp.ClientSession) -> None:
    await emu.create(job("fg"))
    (pod,) = await pods_of(emu, "fg")
    await FakeKubelet(emu).run(pod)  # bound: its deletion is graceful
    status, body = await call(
        http, "DELETE", "/apis/batch/v1/namespaces/default/jobs/fg", {"propagationPolicy": "Foreground"}
    )
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in body["metadata"]["finalizers"]
    await eventually(lambda: asyncio.sleep(0, emu.store.get("jobs", "default", "fg") is None))
    gone = [(r.plural, r.name) for r in emu.history if r.event == "DELETED" and r.plural in ("jobs", "pods")]
    # the owner is removed only after its blocking dependent (blockOwnerDeletion: true) is gone
    assert gone.index(("pods", pod["metadata"]["name"])) < gone.index(("jobs", "fg"))
    terminal = [
        r.object
        for r in emu.history
        if r.plural == "pods"
        and r.name == pod["metadata"]["name"]
        and r.object["status"].get("phase") == "Failed"
    ]
    assert terminal  # the kubelet stopped it first (graceful), the Job still there
