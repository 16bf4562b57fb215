"""The emulator's garbage collector, Job controller, fake kubelet, and a real kopf operator on it."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from typing import Any

import aiohttp
import pytest
from emulator_support import (
    CM,
    FTJ,
    call,
    eventually,
    ftj,
    job,
    job_condition,
    pods_of,
)

from finetune_operator.local.emulator import Emulator
from finetune_operator.local.kubelet import FakeKubelet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]


# --- controllers ---------------------------------------------------------------------------------


async def test_garbage_collection_cascades(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, owner = await call(http, "POST", FTJ, ftj("owner"))
    ref = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    await call(http, "POST", CM, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    await call(
        http,
        "POST",
        CM,
        {
            "metadata": {
                "name": "grandchild",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "child",
                        "uid": emu.store.get("configmaps", "default", "child")["metadata"]["uid"],
                    }
                ],
            }
        },
    )
    await call(http, "POST", CM, {"metadata": {"name": "unrelated"}})
    await call(http, "DELETE", f"{FTJ}/owner")

    async def gone() -> bool:
        return emu.store.get("configmaps", "default", "grandchild") is None

    await eventually(gone)
    assert emu.store.get("configmaps", "default", "child") is None
    assert emu.store.get("configmaps", "default", "unrelated") is not None


async def test_orphan_propagation_keeps_dependents(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, owner = await call(http, "POST", FTJ, ftj("owner"))
    ref = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FinetuneJob",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    await call(http, "POST", CM, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    await call(http, "DELETE", f"{FTJ}/owner", params={"propagationPolicy": "Orphan"})

    async def orphaned() -> bool:
        child = emu.store.get("configmaps", "default", "child")
        return child is not None and not child["metadata"].get("ownerReferences")

    await eventually(orphaned)


async def test_job_controller_creates_pod_and_completes(emu: Emulator) -> None:
    created = await emu.create(job("train"))
    (pod,) = await pods_of(emu, "train")
    assert re.fullmatch(r"train-[a-z0-9]{5}", pod["metadata"]["name"])
    labels = pod["metadata"]["labels"]
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == "train"
    assert labels["controller-uid"] == created["metadata"]["uid"] and labels["app"] == "t"
    (ref,) = pod["metadata"]["ownerReferences"]
    assert ref["kind"] == "Job" and ref["controller"] is True and ref["uid"] == created["metadata"]["uid"]
    assert pod["status"]["phase"] == "Pending"
    kubelet = FakeKubelet(emu)
    await kubelet.run(pod)

    async def active() -> bool:
        return (emu.store.get("jobs", "default", "train") or {}).get("status", {}).get("active") == 1

    await eventually(active)
    done = await kubelet.succeed(pod, message='{"ok": true}')
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == '{"ok": true}'
    finished = await job_condition(emu, "train", "Complete")
    assert finished["status"]["succeeded"] == 1 and finished["status"]["completionTime"]
    assert finished["status"]["startTime"] and "active" not in finished["status"]


async def test_job_backoff_limit(emu: Emulator) -> None:
    await emu.create(job("retry", backoffLimit=1))
    kubelet = FakeKubelet(emu)
    (first,) = await pods_of(emu, "retry")
    await kubelet.fail(first, exit_code=1, message="boom")
    await pods_of(emu, "retry", phase="Pending")
    (second,) = await pods_of(emu, "retry")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    await kubelet.fail(second, exit_code=1)
    failed = await job_condition(emu, "retry", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "BackoffLimitExceeded" and failed["status"]["failed"] == 2
    assert await kubelet.pods("default", label_selector="job-name=retry", phase="Pending") == []


POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}},
    ]
}


async def test_pod_failure_policy(emu: Emulator) -> None:
    await emu.create(job("pfp", backoffLimit=0, podFailurePolicy=POLICY))
    kubelet = FakeKubelet(emu)
    (first,) = await pods_of(emu, "pfp")
    await kubelet.evict(first)  # ignored: not counted against backoffLimit 0, replaced
    (second,) = await pods_of(emu, "pfp")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert "failed" not in (emu.store.get("jobs", "default", "pfp") or {})["status"]
    await kubelet.fail(second, exit_code=3, message="invalid data")
    failed = await job_condition(emu, "pfp", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "PodFailurePolicy"


async def test_job_suspend_and_deadline(emu: Emulator) -> None:
    await emu.create(job("s"))
    (pod,) = await pods_of(emu, "s")
    await emu.patch("jobs", "default", "s", {"spec": {"suspend": True}})
    await job_condition(emu, "s", "Suspended")

    async def no_pods() -> bool:
        return emu.store.get("pods", "default", pod["metadata"]["name"]) is None

    await eventually(no_pods)
    await emu.create(job("d", activeDeadlineSeconds=1))
    failed = await job_condition(emu, "d", "Failed")
    assert (
        next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["reason"]
        == "DeadlineExceeded"
    )


# --- a real kopf operator ------------------------------------------------------------------------


async def test_real_kopf_operator(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    import kopf

    caplog.set_level(logging.DEBUG)
    registry = kopf.OperatorRegistry()
    seen: dict[str, list[str]] = {"create": [], "update": [], "delete": []}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=emu.url, insecure=True)

    @kopf.on.create("finetune.dev", "v1alpha1", "finetunejobs", registry=registry)
    def created(name: str, patch: kopf.Patch, **_: Any) -> None:
        seen["create"].append(name)
        patch.status["phase"] = "Accepted"

    @kopf.on.update("finetune.dev", "v1alpha1", "finetunejobs", registry=registry)
    def updated(name: str, patch: kopf.Patch, **_: Any) -> None:
        seen["update"].append(name)
        patch.status["phase"] = "Updated"

    @kopf.on.delete("finetune.dev", "v1alpha1", "finetunejobs", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        seen["delete"].append(name)

    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.persistence.finalizer = "finetune.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="finetune.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="finetune.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 5
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            namespaces=["default"],
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        await emu.create(ftj("op"))

        async def status_is(phase: str) -> bool:
            return ((emu.store.get("finetunejobs", "default", "op") or {}).get("status") or {}).get(
                "phase"
            ) == phase

        await eventually(lambda: status_is("Accepted"))
        obj = emu.store.get("finetunejobs", "default", "op")
        assert obj is not None and "finetune.dev/finalizer" in obj["metadata"]["finalizers"]
        await emu.patch("finetunejobs", "default", "op", {"spec": {"model": "other"}})
        await eventually(lambda: status_is("Updated"))
        await emu.delete("finetunejobs", "default", "op")

        async def gone() -> bool:
            return emu.store.get("finetunejobs", "default", "op") is None

        await eventually(gone)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert seen == {"create": ["op"], "update": ["op"], "delete": ["op"]}
    problems = [r for r in caplog.records if r.name.startswith("kopf") and r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
    # At every instant of the history: the status was only ever written after kopf's finalizer was in place,
    # and an object released by its last finalizer is deleted by the very next write.
    records = [r for r in emu.history if r.plural == "finetunejobs"]
    assert records[0].verb == "create" and records[-1].event == "DELETED"
    for before, after in itertools.pairwise(records):
        meta = before.object["metadata"]
        if before.object.get("status"):
            assert "finetune.dev/finalizer" in (meta.get("finalizers") or []) or meta.get("deletionTimestamp")
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            assert (
                after.event == "DELETED" and int(after.resource_version) == int(before.resource_version) + 1
            )
