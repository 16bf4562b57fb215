"""The hosted examples (examples/openai/, examples/gradient/) run unchanged but for the endpoint and the
Secret in `finetune local`, against the fake OpenAI and Gradient servers; and the fakes' command-line entry
points (what docs/hosted-engines.md "Try it locally" tells users to start) serve and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.e2e.local_support import ROOT, run_local_async, write_manifests
from tests.fakes.fake_gradient import FakeGradient
from tests.fakes.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}


def _copy_example(name: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "examples" / name).glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


async def _finetune_local(docs: list[dict[str, Any]], tmp_path: Path) -> tuple[int, str]:
    manifests = write_manifests(tmp_path, {"all.yaml": yaml.safe_dump_all(docs)})
    return await run_local_async(manifests, tmp_path / "work", _env(tmp_path), timeout=120, margin=40)


def _job_row(text: str, name: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.startswith(f"default/{name} "))


async def test_openai_example_in_finetune_local(tmp_path: Path) -> None:
    docs = _copy_example("openai")
    key = "sk-local-e2e-0123456789"
    secret = next(d for d in docs if d["kind"] == "Secret")
    secret["stringData"]["apiKey"] = key
    job = next(d for d in docs if d["kind"] == "FinetuneJob")
    async with FakeOpenAI(api_key=key) as fake:
        job["spec"]["engine"]["openai"]["endpoint"]["baseUrl"] = fake.base_url
        code, text = await _finetune_local(docs, tmp_path)
        assert code == 0, text
        assert len(fake.jobs) == 1, text
        remote = next(iter(fake.jobs.values()))
    assert remote["status"] == "succeeded"
    assert remote["model"] == job["spec"]["engine"]["openai"]["baseModel"]
    row = _job_row(text, "faq-gpt")
    assert row[1:3] == ["openai", "Succeeded"], text
    assert row[-1] == remote["fine_tuned_model"] and remote["fine_tuned_model"].startswith("ft:"), text
    assert key not in text


async def test_gradient_example_in_finetune_local(tmp_path: Path) -> None:
    docs = _copy_example("gradient")
    token, workspace = "gradient-local-e2e-token", "ws-local-e2e"
    secret = next(d for d in docs if d["kind"] == "Secret")
    secret["stringData"]["token"] = token
    job = next(d for d in docs if d["kind"] == "FinetuneJob")
    samples = len(
        next(d for d in docs if d["kind"] == "ConfigMap")["data"]["train.jsonl"].strip().splitlines()
    )
    async with FakeGradient(token=token, workspace_id=workspace) as fake:
        job["spec"]["engine"]["gradient"]["host"] = fake.host
        job["spec"]["engine"]["gradient"]["workspaceId"] = workspace
        code, text = await _finetune_local(docs, tmp_path)
        assert code == 0, text
        adapters = fake.adapters()
        trained = sum(len(batch) for _, batch in fake.fine_tune_calls)
    assert len(adapters) == 1, text
    assert adapters[0]["name"] == "notes-adapter"
    assert trained == samples * job["spec"]["engine"]["gradient"]["epochs"]
    row = _job_row(text, "notes-adapter")
    assert row[1:3] == ["gradient", "Succeeded"], text
    assert row[-1] == adapters[0]["id"], text
    assert token not in text


@pytest.mark.parametrize(
    ("module", "flag", "probe"),
    [
        ("tests.fakes.fake_openai", "--api-key", "/fine_tuning/jobs"),
        ("tests.fakes.fake_gradient", "--token", "/models"),
    ],
)
async def test_fake_entry_points_serve_until_sigterm(
    tmp_path: Path, module: str, flag: str, probe: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--port",
        "0",
        flag,
        "cli-secret",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env=_env(tmp_path),
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        base = line.strip().rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:") and not base.startswith("http://127.0.0.1:0/"), line
        headers = {"Authorization": "Bearer cli-secret", "x-gradient-workspace-id": "ws-test"}
        async with aiohttp.ClientSession() as session:
            async with session.get(base + probe, headers=headers) as ok:
                assert ok.status == 200, await ok.text()
            async with session.get(base + probe, headers={**headers, "Authorization": "Bearer no"}) as bad:
                assert bad.status == 401
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
