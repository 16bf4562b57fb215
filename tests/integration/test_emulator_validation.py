"""The emulator checks what kube-apiserver checks on writes of custom resources and CRDs:

* ``fieldValidation`` (KEP-2885): ``Strict`` refuses unknown fields (400 strict decoding error), ``Warn``
  -- the default -- prunes them and answers ``Warning: 299 - "unknown field \\"spec.foo\\""``, ``Ignore``
  prunes silently; schema and CEL errors are 422 Invalid with one cause per field; the status
  subresource is pruned and validated the same way;
* kubectl (v1.32, installed) finds the fieldValidation parameter in ``/openapi/v3`` and sends ``Strict``;
* a CRD whose CEL rules exceed the cost budgets (KEP-2876) is refused with the server's messages.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from tests.integration.operator_support import st_job

from finetune_operator.api.crdgen import all_crds
from finetune_operator.local.emulator import Emulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

FTJ = "/apis/finetune.dev/v1alpha1/namespaces/default/finetunejobs"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE = {"Content-Type": "application/merge-patch+json"}
UNBOUNDED = (
    pathlib.Path(__file__).parents[1] / "fixtures" / "crd_unbounded" / "finetune.dev_finetunejobs.yaml"
)


@pytest.fixture
async def real() -> AsyncIterator[Emulator]:
    """The emulator with the project's generated CRDs (schemas, CEL rules)."""
    async with Emulator(crds=list(all_crds().values()), seed=7) as emulator:
        yield emulator


@pytest.fixture
async def http(real: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(real.url) as session:
        yield session


def _with_unknown(name: str) -> dict[str, Any]:
    body = st_job(name)
    body["spec"]["foo"] = 1
    body["spec"]["engine"]["sentenceTransformers"]["bar"] = "x"
    return body


async def _post(
    http: aiohttp.ClientSession, path: str, body: Any, params: dict[str, str] | None = None
) -> tuple[int, Any, list[str]]:
    async with http.post(path, json=body, params=params or {}) as resp:
        return resp.status, await resp.json(), resp.headers.getall("Warning", [])


EXPECTED_WARNINGS = [
    '299 - "unknown field \\"spec.engine.sentenceTransformers.bar\\""',
    '299 - "unknown field \\"spec.foo\\""',
]


async def test_strict_refuses_unknown_fields(real: Emulator, http: aiohttp.ClientSession) -> None:
    status, body, warnings = await _post(http, FTJ, _with_unknown("s"), {"fieldValidation": "Strict"})
    assert status == 400 and body["reason"] == "BadRequest" and warnings == []
    assert "strict decoding error" in body["message"]
    assert 'unknown field "spec.foo"' in body["message"]
    assert 'unknown field "spec.engine.sentenceTransformers.bar"' in body["message"]
    assert real.store.get("finetunejobs", "default", "s") is None


@pytest.mark.parametrize("params", [{"fieldValidation": "Warn"}, {}], ids=["Warn", "default"])
async def test_warn_prunes_with_a_warning_header(
    real: Emulator, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    status, body, warnings = await _post(http, FTJ, _with_unknown("w"), params)
    assert status == 201, body
    assert sorted(warnings) == EXPECTED_WARNINGS
    stored = real.store.get("finetunejobs", "default", "w")
    assert stored is not None and "foo" not in stored["spec"]
    assert "bar" not in stored["spec"]["engine"]["sentenceTransformers"] and "foo" not in body["spec"]


async def test_ignore_prunes_silently(real: Emulator, http: aiohttp.ClientSession) -> None:
    status, _, warnings = await _post(http, FTJ, _with_unknown("i"), {"fieldValidation": "Ignore"})
    assert status == 201 and warnings == []
    assert "foo" not in (real.store.get("finetunejobs", "default", "i") or {})["spec"]


async def test_unknown_directive_is_a_bad_request(http: aiohttp.ClientSession) -> None:
    status, body, _ = await _post(http, FTJ, st_job("x"), {"fieldValidation": "Loose"})
    assert status == 400 and "fieldValidation" in body["message"]


async def test_invalid_values_are_422_with_field_causes(real: Emulator, http: aiohttp.ClientSession) -> None:
    bad = st_job("bad")
    bad["spec"]["engine"]["sentenceTransformers"]["epochs"] = 0
    bad["spec"]["runPolicy"] = {"backoffLimit": -1}
    for mode in ("Strict", "Warn", "Ignore"):
        status, body, _ = await _post(http, FTJ, bad, {"fieldValidation": mode})
        assert status == 422 and body["reason"] == "Invalid", (mode, body)
        fields = {c["field"] for c in body["details"]["causes"]}
        assert {"spec.engine.sentenceTransformers.epochs", "spec.runPolicy.backoffLimit"} <= fields
        assert body["message"].startswith('FinetuneJob.finetune.dev "bad" is invalid: ')
    assert real.store.get("finetunejobs", "default", "bad") is None


async def test_status_writes_are_pruned_and_validated(real: Emulator, http: aiohttp.ClientSession) -> None:
    await _post(http, FTJ, st_job("st"))
    path = f"{FTJ}/st/status"
    patch = {"status": {"phase": "Running", "notInSchema": {"a": 1}, "progress": {"step": 3, "odd": True}}}
    async with http.patch(path, json=patch, headers=MERGE) as resp:
        assert resp.status == 200
        body = await resp.json()
        warnings = resp.headers.getall("Warning", [])
    assert body["status"]["phase"] == "Running" and body["status"]["progress"]["step"] == 3
    assert "notInSchema" not in body["status"] and "odd" not in body["status"]["progress"]
    assert sorted(warnings) == [
        '299 - "unknown field \\"status.notInSchema\\""',
        '299 - "unknown field \\"status.progress.odd\\""',
    ]
    async with http.patch(path, json={"status": {"attempts": -1}}, headers=MERGE) as resp:
        assert resp.status == 422
        assert {c["field"] for c in (await resp.json())["details"]["causes"]} == {"status.attempts"}
    # an in-process caller (the operator's own tests) gets the same pruning, without headers
    await real.patch("finetunejobs", "default", "st", {"status": {"other": 1}}, subresource="status")
    assert "other" not in (real.store.get("finetunejobs", "default", "st") or {})["status"]


async def test_unbounded_crd_is_refused_with_the_servers_messages() -> None:
    crd = yaml.safe_load(UNBOUNDED.read_text())
    async with Emulator() as emu, aiohttp.ClientSession(emu.url) as http:
        status, body, _ = await _post(http, CRDS, crd)
        assert status == 422 and body["reason"] == "Invalid", body
        assert body["message"].startswith(
            'CustomResourceDefinition.apiextensions.k8s.io "finetunejobs.finetune.dev"'
        )
        causes = body["details"]["causes"]
        fields = [c["field"] for c in causes]
        base = "spec.validation.openAPIV3Schema.properties[spec].properties[dataset].properties[generate]"
        assert (
            f"{base}.properties[documents].items.properties[pvc].x-kubernetes-validations[0].rule" in fields
        )
        assert f"{base}.properties[documents].items.x-kubernetes-validations[0].rule" in fields
        assert f"{base}.x-kubernetes-validations[1].rule" in fields
        assert "spec.validation.openAPIV3Schema" in fields
        assert all(c["reason"] == "FieldValueForbidden" for c in causes)
        assert "exceeds budget by factor of more than 100x" in body["message"]
        assert "exceeds budget by factor of 7.1x" in body["message"]
        assert emu.store.get("customresourcedefinitions", None, "finetunejobs.finetune.dev") is None
        # the bounded CRD is accepted, and an update back to the unbounded one is refused too
        bounded = all_crds()["finetune.dev_finetunejobs.yaml"]
        status, created, _ = await _post(http, CRDS, bounded)
        assert status == 201
        crd["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        async with http.put(f"{CRDS}/finetunejobs.finetune.dev", json=crd) as resp:
            assert resp.status == 422


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_sends_strict_and_gets_the_servers_answer(
    real: Emulator, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(real.kubeconfig()))
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(_with_unknown("k")))

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--kubeconfig", str(config), "-v=6", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)

    strict = await asyncio.to_thread(kubectl, "apply", "-f", str(manifest))
    assert strict.returncode == 1
    assert "fieldValidation=Strict" in strict.stderr
    assert 'strict decoding error: unknown field "spec.engine.sentenceTransformers.bar"' in strict.stderr
    assert real.store.get("finetunejobs", "default", "k") is None
    warn = await asyncio.to_thread(kubectl, "apply", "--validate=warn", "-f", str(manifest))
    assert warn.returncode == 0, warn.stderr
    assert "fieldValidation=Warn" in warn.stderr and 'Warning: unknown field "spec.foo"' in warn.stderr
    stored = real.store.get("finetunejobs", "default", "k")
    assert stored is not None and "foo" not in stored["spec"]
    got = await asyncio.to_thread(kubectl, "get", "finetunejob", "k", "-o", "json")
    assert json.loads(got.stdout)["metadata"]["name"] == "k"
    clean = tmp_path / "clean.yaml"
    clean.write_text(yaml.safe_dump(st_job("k2")))
    dry = await asyncio.to_thread(kubectl, "apply", "--dry-run=server", "-f", str(clean))
    assert dry.returncode == 0 and "dryRun=All" in dry.stderr, dry.stderr
    assert "(server dry run)" in dry.stdout and real.store.get("finetunejobs", "default", "k2") is None
    # the install step of docs/install.md: the CRDs are Established
    established = await asyncio.to_thread(
        kubectl, "wait", "--for=condition=Established", "crd/finetunejobs.finetune.dev", "--timeout=10s"
    )
    assert established.returncode == 0, established.stderr


async def test_server_side_dry_run_checks_everything_and_stores_nothing(
    real: Emulator, http: aiohttp.ClientSession
) -> None:
    before = len(real.history)
    status, body, warnings = await _post(http, FTJ, _with_unknown("dry"), {"dryRun": "All"})
    assert status == 201 and body["metadata"]["uid"] and "foo" not in body["spec"]
    assert sorted(warnings) == EXPECTED_WARNINGS  # the same answer as a real create
    assert real.store.get("finetunejobs", "default", "dry") is None and len(real.history) == before
    status, body, _ = await _post(
        http, FTJ, _with_unknown("dry"), {"dryRun": "All", "fieldValidation": "Strict"}
    )
    assert status == 400  # validated as a real write
    await _post(http, FTJ, st_job("kept"))
    async with http.delete(f"{FTJ}/kept", params={"dryRun": "All"}) as resp:
        assert resp.status == 200
    assert real.store.get("finetunejobs", "default", "kept") is not None
    status, body, _ = await _post(http, FTJ, st_job("x"), {"dryRun": "Maybe"})
    assert status == 400 and "dryRun" in body["message"]
