"""GradientBackend through the real `gradientai` SDK against the local fake API."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from tests.fakes.fake_gradient import FakeGradient
from tests.unit.hosted_support import Objects, Sleeps, gradient_job, make_context

from finetune_operator.backends.base import Observation
from finetune_operator.backends.gradient_backend import GradientBackend
from finetune_operator.backends.hosted_common import RetryPolicy

pytestmark = pytest.mark.unit

INPUTS = "\n".join(
    json.dumps({"inputs": f"<s>### Q: fact {i}?\n### A: answer number {i}</s>"}) for i in range(5)
)


def _setup(data: str = INPUTS, token: str = "gradient-test-token") -> tuple[Objects, Sleeps]:
    objects = Objects()
    objects.secret("gradient", "token", token)
    objects.config_map("inputs-data", "train.jsonl", data)
    return objects, Sleeps()


async def _wait_end(backend: GradientBackend, job_factory: object, attempt: int = 1) -> Observation:
    assert callable(job_factory)
    for _ in range(400):
        obs: Observation = await backend.observe(job_factory(), attempt)
        if obs.state not in ("running", "pending"):
            return obs
        await asyncio.sleep(0.02)
    raise AssertionError("the training loop did not end")


async def test_trains_in_batches_and_reports_the_adapter() -> None:
    objects, sleeps = _setup()
    async with FakeGradient() as fake:
        backend = GradientBackend(make_context(objects, sleeps))
        job = gradient_job(fake.host, epochs=2, name="notes-adapter", rank=8, learningRate=0.0001)
        obs = await backend.submit(job, 1)
        assert obs.state == "running" and obs.remote_job_id
        assert obs.result == {"dataset": {"trainQueries": 5}}
        final = await _wait_end(backend, lambda: job)
        assert final.state == "succeeded", final.message
        adapter = fake.adapters()[0]
        assert final.remote_job_id == adapter["id"] and adapter["name"] == "notes-adapter"
        assert adapter["hyperparameters"] == {
            "loraHyperparameters": {"rank": 8},
            "trainingArguments": {"learningRate": 0.0001},
        }
        assert final.result is not None and final.result["model"]["adapterId"] == adapter["id"]
        # 5 samples, batch 2 -> 3 steps per epoch, 2 epochs
        assert [len(s) for _, s in fake.fine_tune_calls] == [2, 2, 1, 2, 2, 1]
        assert fake.fine_tune_calls[3][1][0]["inputs"] == fake.fine_tune_calls[0][1][0]["inputs"]
        assert final.progress is not None and final.progress["step"] == 6 and final.progress["percent"] == 100
        assert final.trained_tokens and final.trained_tokens > 0 and final.progress["loss"] > 0
        # the SDK sent the workspace header
        assert all(h.get("x-gradient-workspace-id") == "ws-test" for _, _, h in fake.requests)
        assert any(p == "/api/models?capability=any&onlyBase=True" for _, p, _ in fake.requests)


async def test_max_steps_and_existing_adapter() -> None:
    objects, sleeps = _setup()
    async with FakeGradient() as fake:
        first = GradientBackend(make_context(objects, sleeps))
        job = gradient_job(fake.host, uid="first")
        await first.submit(job, 1)
        done = await _wait_end(first, lambda: job)
        adapter_id = done.remote_job_id
        calls = len(fake.fine_tune_calls)
        cont = gradient_job(fake.host, uid="second", modelAdapterId=adapter_id, maxSteps=2)
        backend = GradientBackend(make_context(objects, sleeps))
        await backend.submit(cont, 1)
        final = await _wait_end(backend, lambda: cont)
        assert final.state == "succeeded" and final.remote_job_id == adapter_id
        assert len(fake.fine_tune_calls) - calls == 2 and len(fake.adapters()) == 1


async def test_invalid_inputs_report_lines() -> None:
    bad = "\n".join(
        [
            json.dumps({"inputs": "ok"}),
            json.dumps({"input": "typo"}),
            json.dumps({"inputs": "x", "multiplier": "2"}),
        ]
    )
    objects, sleeps = _setup(data=bad)
    async with FakeGradient() as fake:
        obs = await GradientBackend(make_context(objects, sleeps)).submit(gradient_job(fake.host), 1)
        assert obs.state == "invalid" and obs.reason == "InvalidDataset"
        assert "line 2: unrecognized_key" in obs.message and "line 2: missing_inputs" in obs.message
        assert "line 3: invalid_multiplier" in obs.message
        assert fake.adapters() == []


async def test_rejected_token_is_unauthorized() -> None:
    objects, sleeps = _setup(token="wrong-token")
    async with FakeGradient() as fake:
        obs = await GradientBackend(make_context(objects, sleeps)).submit(gradient_job(fake.host), 1)
        assert obs.state == "invalid" and obs.reason == "Unauthorized"
        assert "access token is invalid" in obs.message and "wrong-token" not in obs.message


async def test_unreachable_host_is_a_clear_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    objects, sleeps = _setup()
    ctx = make_context(objects, sleeps, retry=RetryPolicy(attempts=2, base_delay=0.01, call_timeout=10))
    obs = await GradientBackend(ctx).submit(gradient_job(f"http://127.0.0.1:{port}/api"), 1)
    assert obs.state == "failed" and obs.reason == "ProviderUnreachable"
    assert f"127.0.0.1:{port}" in obs.message


async def test_missing_host_names_the_closure() -> None:
    objects, sleeps = _setup()
    job = gradient_job("http://unused.invalid/api")
    job.spec.engine.gradient.host = None  # type: ignore[union-attr]
    obs = await GradientBackend(make_context(objects, sleeps)).submit(job, 1)
    assert obs.state == "invalid" and "closed in 2024" in obs.message


async def test_5xx_during_training_is_retried() -> None:
    objects, sleeps = _setup()
    async with FakeGradient() as fake:
        fake.fail_next("POST /api/models/{id}/fine-tune", 503, times=2)
        backend = GradientBackend(make_context(objects, sleeps))
        job = gradient_job(fake.host)
        await backend.submit(job, 1)
        final = await _wait_end(backend, lambda: job)
        assert final.state == "succeeded" and len(fake.fine_tune_calls) == 3
        assert sleeps.delays == [0.5, 1.0]


async def test_restart_resumes_from_recorded_step_without_new_adapter() -> None:
    objects, sleeps = _setup()
    async with FakeGradient() as fake:
        job = gradient_job(fake.host, epochs=2)
        first = await GradientBackend(make_context(objects, sleeps)).submit(job, 1)
        adapter_id = first.remote_job_id
        await asyncio.sleep(0)  # the old operator dies: its loop is gone with it
        restarted = GradientBackend(make_context(objects, sleeps))
        status = {"remoteJobId": adapter_id, "progress": {"step": 4}, "metrics": {"trainedTokens": 100}}
        resumed_job = gradient_job(fake.host, epochs=2, status=status)
        seen = await restarted.observe(resumed_job, 1)
        assert seen.state == "interrupted" and "step 4" in seen.message
        calls_before = len(fake.fine_tune_calls)
        await restarted.submit(resumed_job, 2)
        final = await _wait_end(restarted, lambda: resumed_job, attempt=2)
        assert final.state == "succeeded" and final.remote_job_id == adapter_id
        assert len(fake.adapters()) == 1
        resumed_calls = [c for c in fake.fine_tune_calls[calls_before:] if c[0] == adapter_id]
        assert len(resumed_calls) >= 2 and final.progress is not None and final.progress["step"] == 6
        assert final.trained_tokens is not None and final.trained_tokens > 100


@pytest.mark.parametrize(("delete", "expect_deleted"), [(True, True), (False, False)])
async def test_cancel_deletes_only_when_asked(delete: bool, expect_deleted: bool) -> None:
    objects, sleeps = _setup(data="\n".join([json.dumps({"inputs": f"s{i}"}) for i in range(40)]))
    async with FakeGradient(step_delay=0.05) as fake:
        backend = GradientBackend(make_context(objects, sleeps))
        job = gradient_job(fake.host, batchSize=1, deleteAdapterOnCancel=delete)
        obs = await backend.submit(job, 1)
        await asyncio.sleep(0.1)
        await backend.cancel(job, 1)
        steps = len(fake.fine_tune_calls)
        await asyncio.sleep(0.15)
        assert len(fake.fine_tune_calls) <= steps + 1 < 40  # the loop stopped
        assert (obs.remote_job_id in fake.deleted) is expect_deleted


async def test_cancel_never_deletes_a_finished_or_given_adapter() -> None:
    objects, sleeps = _setup()
    async with FakeGradient() as fake:
        backend = GradientBackend(make_context(objects, sleeps))
        job = gradient_job(fake.host, deleteAdapterOnCancel=True)
        await backend.submit(job, 1)
        done = await _wait_end(backend, lambda: job)
        await backend.cancel(job, 1)
        assert fake.deleted == [] and done.state == "succeeded"
        given = gradient_job(fake.host, uid="g2", modelAdapterId=done.remote_job_id)
        await backend.submit(given, 1)
        await backend.cancel(given, 1)
        assert fake.deleted == []
