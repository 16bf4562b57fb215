"""The emulated kube-apiserver over real HTTP (aiohttp): every API-server semantic it promises."""

from __future__ import annotations

import asyncio
import pathlib
import re
import time

import aiohttp
import pytest
from emulator_support import (
    CM,
    CRDS,
    FTJ,
    JSONPATCH,
    MERGE,
    TQ,
    call,
    crd,
    ftj,
    watch_events,
)

from finetune_operator.local.emulator import Emulator, load_crds

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]


# --- create / get / errors -----------------------------------------------------------------------


async def test_create_fills_server_fields(http: aiohttp.ClientSession) -> None:
    status, obj = await call(http, "POST", FTJ, {**ftj("a"), "status": {"phase": "Done"}})
    assert status == 201
    meta = obj["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert meta["namespace"] == "default" and meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) > 0
    assert "status" not in obj  # the status subresource: create ignores .status
    status, again = await call(http, "GET", f"{FTJ}/a")
    assert status == 200 and again == obj


async def test_resource_versions_are_global_and_increasing(http: aiohttp.ClientSession) -> None:
    _, a = await call(http, "POST", FTJ, ftj("a"))
    _, b = await call(http, "POST", CM, {"metadata": {"name": "b"}, "data": {}})
    _, c = await call(http, "PATCH", f"{FTJ}/a", {"spec": {"model": "x"}}, headers=MERGE)
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


async def test_errors_are_status_objects(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, ftj("a"))
    status, body = await call(http, "POST", FTJ, ftj("a"))
    assert status == 409 and body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["reason"] == "AlreadyExists" and body["code"] == 409
    status, body = await call(http, "GET", f"{FTJ}/missing")
    assert status == 404 and body["reason"] == "NotFound" and "missing" in body["message"]
    status, body = await call(http, "GET", "/apis/finetune.dev/v1alpha1/namespaces/default/nothings")
    assert status == 404 and body["kind"] == "Status"
    status, body = await call(http, "POST", FTJ, {"metadata": {"name": "Bad_Name"}})
    assert status == 422 and body["reason"] == "Invalid"
    status, body = await call(http, "POST", FTJ, {"metadata": {"name": "x", "namespace": "other"}})
    assert status == 400 and body["reason"] == "BadRequest"


async def test_generate_name(http: aiohttp.ClientSession) -> None:
    status, obj = await call(http, "POST", FTJ, {"metadata": {"generateName": "run-"}, "spec": {}})
    assert status == 201 and re.fullmatch(r"run-[a-z0-9]{5}", obj["metadata"]["name"])


async def test_cluster_scoped_resource(http: aiohttp.ClientSession) -> None:
    status, obj = await call(
        http, "POST", TQ, {"metadata": {"name": "q", "namespace": "ignored"}, "spec": {}}
    )
    assert status == 201 and "namespace" not in obj["metadata"]
    status, _ = await call(http, "GET", "/apis/finetune.dev/v1alpha1/namespaces/default/trainingquotas/q")
    assert status == 404
    status, listed = await call(http, "GET", TQ)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["q"]


# --- update / patch ------------------------------------------------------------------------------


async def test_put_conflicts_on_stale_resource_version(http: aiohttp.ClientSession) -> None:
    _, obj = await call(http, "POST", FTJ, ftj("a"))
    obj["spec"] = {"model": "b"}
    status, updated = await call(http, "PUT", f"{FTJ}/a", obj)
    assert status == 200 and updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])
    status, body = await call(http, "PUT", f"{FTJ}/a", obj)  # obj still has the old resourceVersion
    assert status == 409 and body["reason"] == "Conflict"
    stale = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"model": "c"}}
    status, body = await call(http, "PATCH", f"{FTJ}/a", stale, headers=MERGE)
    assert status == 409


async def test_generation_bumps_only_on_spec_changes(http: aiohttp.ClientSession) -> None:
    _, obj = await call(http, "POST", FTJ, ftj("a"))
    _, obj2 = await call(http, "PATCH", f"{FTJ}/a", {"metadata": {"labels": {"x": "y"}}}, headers=MERGE)
    assert obj2["metadata"]["generation"] == 1
    assert obj2["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]
    _, obj3 = await call(http, "PATCH", f"{FTJ}/a/status", {"status": {"phase": "Running"}}, headers=MERGE)
    assert obj3["metadata"]["generation"] == 1 and obj3["status"] == {"phase": "Running"}
    _, obj4 = await call(http, "PATCH", f"{FTJ}/a", {"spec": {"epochs": 3}}, headers=MERGE)
    assert obj4["metadata"]["generation"] == 2 and obj4["spec"] == {"model": "m", "epochs": 3}
    _, obj5 = await call(http, "PATCH", f"{FTJ}/a", {"spec": {"epochs": 3}}, headers=MERGE)  # a no-op
    assert obj5["metadata"]["resourceVersion"] == obj4["metadata"]["resourceVersion"]


async def test_patch_flavours(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, ftj("a", model="m", lr=1, nested={"k": 1, "j": 2}))
    _, obj = await call(
        http, "PATCH", f"{FTJ}/a", {"spec": {"lr": None, "nested": {"j": None}}}, headers=MERGE
    )
    assert obj["spec"] == {"model": "m", "nested": {"k": 1}}
    sm = {"Content-Type": "application/strategic-merge-patch+json"}
    _, obj = await call(http, "PATCH", f"{FTJ}/a", {"spec": {"extra": [1]}}, headers=sm)
    assert obj["spec"]["extra"] == [1]
    ops = [
        {"op": "test", "path": "/spec/model", "value": "m"},
        {"op": "replace", "path": "/spec/model", "value": "n"},
        {"op": "add", "path": "/spec/extra/-", "value": 2},
        {"op": "remove", "path": "/spec/nested"},
    ]
    status, obj = await call(http, "PATCH", f"{FTJ}/a", ops, headers=JSONPATCH)
    assert status == 200 and obj["spec"] == {"model": "n", "extra": [1, 2]}
    before = obj["metadata"]["resourceVersion"]
    failing = [
        {"op": "test", "path": "/spec/model", "value": "m"},
        {"op": "replace", "path": "/spec/model", "value": "z"},
    ]
    status, body = await call(http, "PATCH", f"{FTJ}/a", failing, headers=JSONPATCH)
    assert status == 422 and body["kind"] == "Status"
    _, obj = await call(http, "GET", f"{FTJ}/a")
    assert obj["spec"]["model"] == "n" and obj["metadata"]["resourceVersion"] == before
    status, _ = await call(
        http, "PATCH", f"{FTJ}/a", {}, headers={"Content-Type": "application/apply-patch+yaml"}
    )
    assert status == 415


async def test_status_subresource_isolation(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, ftj("a"))
    _, obj = await call(
        http, "PATCH", f"{FTJ}/a", {"spec": {"x": 1}, "status": {"phase": "Hacked"}}, headers=MERGE
    )
    assert "status" not in obj and obj["spec"]["x"] == 1
    _, obj = await call(
        http,
        "PATCH",
        f"{FTJ}/a/status",
        {"spec": {"x": 2}, "status": {"phase": "Ok"}, "metadata": {"labels": {"l": "v"}}},
        headers=MERGE,
    )
    assert obj["spec"]["x"] == 1 and obj["status"] == {"phase": "Ok"} and "labels" not in obj["metadata"]
    obj["status"] = {"phase": "Put"}
    obj["spec"]["x"] = 3
    _, put = await call(http, "PUT", f"{FTJ}/a/status", obj)
    assert put["status"] == {"phase": "Put"} and put["spec"]["x"] == 1
    await call(http, "POST", CM, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    status, _ = await call(http, "PATCH", f"{CM}/c/status", {"status": {}}, headers=MERGE)
    assert status == 404


# --- finalizers / deletion -----------------------------------------------------------------------


async def test_finalizers_block_deletion(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, {**ftj("a"), "metadata": {"name": "a", "finalizers": ["finetune.dev/f"]}})
    status, obj = await call(http, "DELETE", f"{FTJ}/a")
    assert status == 200 and obj["metadata"]["deletionTimestamp"]  # 200: the real server's delete handler
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 0
    status, obj = await call(http, "GET", f"{FTJ}/a")
    assert status == 200 and obj["metadata"]["deletionTimestamp"]
    rv = obj["metadata"]["resourceVersion"]
    status, body = await call(
        http, "PATCH", f"{FTJ}/a", {"metadata": {"finalizers": ["finetune.dev/f", "new"]}}, headers=MERGE
    )
    assert status == 422
    watching = asyncio.create_task(watch_events(http, FTJ, {"resourceVersion": rv}, count=2))
    await asyncio.sleep(0.05)
    status, _ = await call(http, "PATCH", f"{FTJ}/a", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert status == 200
    assert [e["type"] for e in await watching] == ["MODIFIED", "DELETED"]
    status, _ = await call(http, "GET", f"{FTJ}/a")
    assert status == 404
    status, body = await call(http, "DELETE", f"{FTJ}/a")
    assert status == 404 and body["reason"] == "NotFound"


async def test_delete_without_finalizers_removes(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, ftj("a"))
    status, obj = await call(http, "DELETE", f"{FTJ}/a")
    assert status == 200 and obj["metadata"]["name"] == "a"
    assert (await call(http, "GET", f"{FTJ}/a"))[0] == 404


# --- lists and selectors -------------------------------------------------------------------------


async def test_list_selectors(http: aiohttp.ClientSession) -> None:
    for name, labels in [("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})]:
        await call(http, "POST", FTJ, {"metadata": {"name": name, "labels": labels}, "spec": {}})
    await call(
        http,
        "POST",
        "/apis/finetune.dev/v1alpha1/namespaces/other/finetunejobs",
        {"metadata": {"name": "d", "labels": {"app": "x"}}, "spec": {}},
    )

    async def names(params: dict[str, str], path: str = FTJ) -> list[str]:
        status, body = await call(http, "GET", path, params=params)
        assert status == 200 and body["metadata"]["resourceVersion"]
        return sorted(o["metadata"]["name"] for o in body["items"])

    assert await names({"labelSelector": "app=x"}) == ["a"]
    assert await names({"labelSelector": "app==x"}) == ["a"]
    assert await names({"labelSelector": "app!=x"}) == ["b", "c"]
    assert await names({"labelSelector": "app in (x, y)"}) == ["a", "b"]
    assert await names({"labelSelector": "app notin (x)"}) == ["b", "c"]
    assert await names({"labelSelector": "tier"}) == ["a"]
    assert await names({"labelSelector": "!tier"}) == ["b", "c"]
    assert await names({"labelSelector": "app=x,tier=1"}) == ["a"]
    assert await names({"fieldSelector": "metadata.name=b"}) == ["b"]
    assert await names(
        {"fieldSelector": "metadata.namespace=other"}, "/apis/finetune.dev/v1alpha1/finetunejobs"
    ) == ["d"]
    assert await names({}, "/apis/finetune.dev/v1alpha1/finetunejobs") == ["a", "b", "c", "d"]
    assert await names({"labelSelector": "app=x"}, "/apis/finetune.dev/v1alpha1/finetunejobs") == ["a", "d"]
    status, body = await call(http, "GET", "/api/v1/pods")
    assert status == 200 and body["kind"] == "PodList" and body["items"] == []
    status, body = await call(http, "GET", "/apis/batch/v1/jobs")
    assert status == 200 and body["kind"] == "JobList"


# --- watches -------------------------------------------------------------------------------------


async def test_watch_replays_from_resource_version(http: aiohttp.ClientSession) -> None:
    _, listed = await call(http, "GET", FTJ)
    await call(http, "POST", FTJ, ftj("a"))
    await call(http, "PATCH", f"{FTJ}/a", {"spec": {"v": 1}}, headers=MERGE)
    await call(http, "DELETE", f"{FTJ}/a")
    events = await watch_events(
        http, FTJ, {"resourceVersion": listed["metadata"]["resourceVersion"]}, count=3
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)


async def test_watch_without_resource_version_lists_first(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, ftj("a"))
    events = await watch_events(http, FTJ, {"allowWatchBookmarks": "true"}, count=1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "a"


async def test_watch_too_old_resource_version_is_gone() -> None:
    async with (
        Emulator(crds=CRDS, watch_cache_size=5, controllers=False) as emu,
        aiohttp.ClientSession(emu.url) as http,
    ):
        for i in range(10):
            await call(http, "POST", FTJ, ftj(f"o{i}"))
        events = await watch_events(http, FTJ, {"resourceVersion": "1"})
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["kind"] == "Status"


async def test_watch_timeout_seconds_closes_stream(http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    events = await watch_events(http, FTJ, {"timeoutSeconds": "1", "resourceVersion": "1"}, timeout=5)
    assert events == [] and 0.9 < time.monotonic() - started < 3


async def test_watch_label_selector_and_transitions(http: aiohttp.ClientSession) -> None:
    _, listed = await call(http, "GET", FTJ)
    await call(http, "POST", FTJ, {"metadata": {"name": "a", "labels": {"w": "1"}}, "spec": {}})
    await call(http, "POST", FTJ, {"metadata": {"name": "b"}, "spec": {}})
    await call(http, "PATCH", f"{FTJ}/a", {"metadata": {"labels": {"w": "2"}}}, headers=MERGE)
    await call(http, "PATCH", f"{FTJ}/b", {"metadata": {"labels": {"w": "1"}}}, headers=MERGE)
    params = {"resourceVersion": listed["metadata"]["resourceVersion"], "labelSelector": "w=1"}
    events = await watch_events(http, FTJ, params, count=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]


async def test_watch_loses_nothing_under_load(emu: Emulator, http: aiohttp.ClientSession) -> None:
    _, listed = await call(http, "GET", CM)
    rv = listed["metadata"]["resourceVersion"]
    total = 600
    watching = asyncio.create_task(watch_events(http, CM, {"resourceVersion": rv}, count=total, timeout=8))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    for i in range(200):
        await emu.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}, "data": {}})
        await emu.patch("configmaps", "default", f"c{i}", {"data": {"k": "v"}})
        await emu.delete("configmaps", "default", f"c{i}")
    assert time.monotonic() - started < 5
    events = await watching
    assert len(events) == total
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == total


# --- history -------------------------------------------------------------------------------------


async def test_history_records_every_write(emu: Emulator, http: aiohttp.ClientSession) -> None:
    start = len(emu.history)
    await call(http, "POST", FTJ, ftj("a"))
    await call(http, "PATCH", f"{FTJ}/a/status", {"status": {"phase": "P"}}, headers=MERGE)
    await call(http, "DELETE", f"{FTJ}/a")
    records = [r for r in emu.history[start:] if r.plural == "finetunejobs"]
    assert [(r.verb, r.event) for r in records] == [
        ("create", "ADDED"),
        ("patch", "MODIFIED"),
        ("delete", "DELETED"),
    ]
    assert records[1].subresource == "status" and records[1].object["status"] == {"phase": "P"}
    assert all(r.namespace == "default" and r.name == "a" for r in records)
    rvs = [int(r.resource_version) for r in emu.history]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)
    assert [r.timestamp for r in emu.history] == sorted(r.timestamp for r in emu.history)


# --- discovery -----------------------------------------------------------------------------------


async def test_discovery(http: aiohttp.ClientSession) -> None:
    _, api = await call(http, "GET", "/api")
    assert api["versions"] == ["v1"]
    _, core = await call(http, "GET", "/api/v1")
    names = {r["name"]: r for r in core["resources"]}
    assert core["groupVersion"] == "v1"
    assert {"pods", "pods/status", "configmaps", "secrets", "serviceaccounts", "events", "namespaces"} <= set(
        names
    )
    assert names["pods"]["namespaced"] is True and names["namespaces"]["namespaced"] is False
    assert "watch" in names["pods"]["verbs"] and names["pods"]["kind"] == "Pod"
    _, groups = await call(http, "GET", "/apis")
    assert {
        "batch",
        "rbac.authorization.k8s.io",
        "events.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "finetune.dev",
    } <= {g["name"] for g in groups["groups"]}
    _, ours = await call(http, "GET", "/apis/finetune.dev/v1alpha1")
    res = {r["name"]: r for r in ours["resources"]}
    assert set(res) == {"finetunejobs", "finetunejobs/status", "trainingquotas", "trainingquotas/status"}
    assert res["finetunejobs"]["singularName"] == "finetunejob" and res["finetunejobs"]["shortNames"] == [
        "fin"
    ]
    assert res["trainingquotas"]["namespaced"] is False


async def test_project_crds_and_crds_created_over_the_api(http: aiohttp.ClientSession) -> None:
    crd_dir = pathlib.Path(__file__).parents[2] / "crds"
    project = load_crds(crd_dir) if crd_dir.is_dir() else []
    if not project:
        pytest.skip("the project's CRDs are not generated yet")
    async with Emulator(crds=project, controllers=False) as emu, aiohttp.ClientSession(emu.url) as session:
        _, ours = await call(session, "GET", "/apis/finetune.dev/v1alpha1")
        assert {"finetunejobs", "finetunejobs/status", "trainingquotas", "trainingquotas/status"} <= {
            r["name"] for r in ours["resources"]
        }
    widget = crd("Widget", "widgets", "Namespaced")
    widget["spec"]["group"] = widget["metadata"]["name"] = "example.com"
    widget["metadata"]["name"] = "widgets.example.com"
    status, _ = await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", widget)
    assert status == 201
    status, obj = await call(
        http, "POST", "/apis/example.com/v1alpha1/namespaces/default/widgets", {"metadata": {"name": "w"}}
    )
    assert status == 201 and obj["kind"] == "Widget"


async def test_strict_namespaces() -> None:
    async with (
        Emulator(auto_namespaces=False, controllers=False) as emu,
        aiohttp.ClientSession(emu.url) as http,
    ):
        status, body = await call(
            http, "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "c"}}
        )
        assert status == 404 and body["reason"] == "NotFound"
        status, _ = await call(http, "POST", CM, {"metadata": {"name": "c"}})
        assert status == 201


async def test_watch_a_single_named_object(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", FTJ, ftj("a"))
    await call(http, "POST", FTJ, ftj("b"))
    events = await watch_events(http, f"{FTJ}/b", {}, count=1)
    assert [e["object"]["metadata"]["name"] for e in events] == ["b"]


async def test_watch_loses_nothing_under_concurrent_http_writes(http: aiohttp.ClientSession) -> None:
    _, listed = await call(http, "GET", CM)
    params = {"resourceVersion": listed["metadata"]["resourceVersion"], "labelSelector": "load=yes"}
    watching = asyncio.create_task(watch_events(http, CM, params, count=300, timeout=8))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(
        *(
            call(http, "POST", CM, {"metadata": {"name": f"h{i}", "labels": {"load": "yes"}}})
            for i in range(300)
        )
    )
    assert {status for status, _ in results} == {201}
    events = await watching
    assert sorted(e["object"]["metadata"]["name"] for e in events) == sorted(f"h{i}" for i in range(300))
    assert {e["type"] for e in events} == {"ADDED"}
