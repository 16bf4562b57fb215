"""Any kubeconfig works: the real operator logs in through the `kubernetes` package, here with an exec credential
plugin (as EKS, GKE and AKS kubeconfigs have), against an emulator that checks bearer tokens; an expired token
(revoked by the server) is fetched again from the plugin on the 401, and the operator carries on."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from tests.conftest import RunningOperator, eventually, fast_settings
from tests.integration.operator_support import data_config_map, run_to_success, st_job

from finetune_operator.api.crdgen import all_crds
from finetune_operator.local.emulator import Emulator
from finetune_operator.local.kubelet import FakeKubelet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PLUGIN = """
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with (here / "calls").open("a") as f:
    f.write("x")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": (here / "token").read_text().strip()},
}))
"""


@pytest.fixture
async def secured() -> AsyncIterator[Emulator]:
    async with Emulator(crds=list(all_crds().values()), seed=1, tokens=["exec-token-1"]) as emu:
        yield emu


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    (tmp_path / "plugin.py").write_text(PLUGIN)
    (tmp_path / "token").write_text("exec-token-1")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [
            {
                "name": "u",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": sys.executable,
                        "args": [str(tmp_path / "plugin.py"), str(tmp_path)],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_exec_plugin_kubeconfig(
    secured: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{secured.url}/apis/finetune.dev/v1alpha1/finetunejobs"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:  # no token, no answer
        assert resp.status == 401 and (await resp.json())["reason"] == "Unauthorized"
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, secured.url)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = fast_settings(secured.url, api_server=None, api_insecure=False)
    op = RunningOperator(settings)
    await op.start()
    kubelet = FakeKubelet(secured)
    try:
        await data_config_map(secured)
        await run_to_success(secured, kubelet, "one")
        assert "exec-token-1" in secured.bearer_tokens
        assert (tmp_path / "calls").read_text()  # the plugin ran

        # the token expires: the server refuses it now, the plugin hands out a new one
        (tmp_path / "token").write_text("exec-token-2")
        secured.tokens = frozenset({"exec-token-2"})
        status = await run_to_success(secured, kubelet, "two", timeout=60)
        assert status["metrics"]["after"]["mrrAt10"] == 0.71
        assert "exec-token-2" in secured.bearer_tokens
        await eventually(lambda: len((tmp_path / "calls").read_text()) >= 2)
        # no token in the job's status or events
        assert "exec-token" not in json.dumps(secured.store.list("events", "default"))
        assert "exec-token" not in json.dumps(status)
    finally:
        await op.stop()


async def test_trainer_status_sink_authenticates_with_its_token(secured: Emulator, tmp_path: Path) -> None:
    """The trainer pod's own client (its ServiceAccount token file) against a server that checks tokens."""
    from finetune_operator.api.trainerconfig import JobRef, ReportSpec
    from finetune_trainer.progress import StatusSink

    await secured.create(st_job("sink"))
    token = tmp_path / "sa-token"
    progress = {"stage": "train", "step": 3, "totalSteps": 10}
    for value in ("wrong-token", "exec-token-1"):  # refused (logged, training goes on), then accepted
        token.write_text(value)
        sink = StatusSink(
            ReportSpec(api_server=secured.url, token_path=str(token)),
            JobRef(namespace="default", name="sink"),
        )
        sink.emit(progress, None)
        await asyncio.to_thread(sink.close)
        status = (secured.store.get("finetunejobs", "default", "sink") or {}).get("status") or {}
        assert (status.get("progress") == progress) is (value == "exec-token-1"), status
    assert secured.bearer_tokens[-2:] == ["wrong-token", "exec-token-1"]
