"""OpenAIBackend through the real `openai` SDK against the local fake API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.fakes.fake_openai import REFUSAL_MESSAGE, FakeOpenAI
from tests.unit.hosted_support import API_KEY, GOOD_CHAT, Objects, Sleeps, make_context, openai_job

from finetune_operator.backends.base import Observation
from finetune_operator.backends.hosted_common import RetryPolicy, TransientProviderError
from finetune_operator.backends.openai_backend import OpenAIBackend

pytestmark = pytest.mark.unit


def _setup(train: str = GOOD_CHAT, key: str = API_KEY) -> tuple[Objects, Sleeps]:
    objects = Objects()
    objects.secret("openai", "apiKey", key)
    objects.config_map("chat-data", "train.jsonl", train)
    return objects, Sleeps()


async def _run_to_end(
    backend: OpenAIBackend, base_url: str, obs: Observation, polls: int = 10
) -> Observation:
    for _ in range(polls):
        if obs.state in ("succeeded", "failed", "invalid"):
            return obs
        job = openai_job(base_url, status={"remoteJobId": obs.remote_job_id})
        obs = await backend.observe(job, 1)
    return obs


async def test_success_reports_remote_model_checkpoints_and_events() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI() as fake:
        backend = OpenAIBackend(make_context(objects, sleeps))
        obs = await backend.submit(openai_job(fake.base_url), 1)
        assert obs.state == "pending" and obs.remote_job_id
        assert any(r == "RemoteJobCreated" for _, r, _ in obs.events)
        assert obs.result and obs.result["dataset"]["trainQueries"] == 12
        assert obs.result["estimatedBilledTokens"] > 0
        all_events = list(obs.events)
        final = obs
        for _ in range(6):
            final = await backend.observe(
                openai_job(fake.base_url, status={"remoteJobId": obs.remote_job_id}), 1
            )
            all_events += final.events
            if final.state == "succeeded":
                break
        assert final.state == "succeeded"
        model_id = f"ft:gpt-4o-mini-2024-07-18:faq:{obs.remote_job_id}"
        assert final.result is not None and final.result["model"]["providerModelId"] == model_id
        assert final.trained_tokens == 1234 * 2
        assert [c["step"] for c in final.checkpoints] == [10, 20, 30]
        assert final.checkpoints[-1]["modelId"] == f"{model_id}:ckpt-step-30"
        assert (
            final.progress is not None and final.progress["step"] == 30 and final.progress["percent"] == 100
        )
        messages = [m for _, _, m in all_events]
        assert any("successfully completed" in m for m in messages)
        assert len(messages) == len(set(messages)), "remote events are reported once"
        # what was sent: file upload, method hyperparameters, metadata identifying the FinetuneJob
        create = fake.calls("POST /v1/fine_tuning/jobs")[0].json
        assert create["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
        assert create["metadata"] == {
            "finetune-namespace": "team-a",
            "finetune-name": "faq-bot",
            "finetune-uid": "uid-1",
            "finetune-attempt": "1",
        }
        assert create["suffix"] == "faq" and create["seed"] == 7
        uploaded = fake.file_contents[create["training_file"]].decode()
        assert uploaded == GOOD_CHAT
        assert sleeps.delays == []


async def test_invalid_dataset_fails_with_per_line_report_before_upload() -> None:
    bad = "\n".join(
        [
            json.dumps(
                {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
            ),
            "{not json",
            json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
            json.dumps(
                {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": ""}]}
            ),
        ]
    )
    objects, sleeps = _setup(train=bad)
    async with FakeOpenAI() as fake:
        obs = await OpenAIBackend(make_context(objects, sleeps)).submit(openai_job(fake.base_url), 1)
        assert obs.state == "invalid" and obs.reason == "InvalidDataset"
        assert "spec.dataset.train" in obs.message
        assert "line 2: invalid_json" in obs.message
        assert "line 3: example_missing_assistant_message" in obs.message
        assert "line 4: unrecognized_role" in obs.message and "line 4: empty_content" in obs.message
        assert len(obs.message) <= 1100
        assert fake.calls("POST /v1/files") == [] and fake.created_jobs == 0


async def test_wrong_key_is_unauthorized_and_not_retried_nor_leaked() -> None:
    objects, sleeps = _setup(key="sk-proj-WRONGkey1234567890")
    async with FakeOpenAI() as fake:
        obs = await OpenAIBackend(make_context(objects, sleeps)).submit(openai_job(fake.base_url), 1)
        assert obs.state == "invalid" and obs.reason == "Unauthorized"
        assert "Incorrect API key provided" in obs.message
        assert "WRONG" not in obs.message and "7890" not in obs.message
        assert len(fake.requests) == 1 and sleeps.delays == []


async def test_429_honours_retry_after() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI() as fake:
        fake.fail_next(
            "POST /v1/fine_tuning/jobs",
            429,
            times=2,
            retry_after=3,
            message="Rate limit reached for requests",
        )
        obs = await OpenAIBackend(make_context(objects, sleeps)).submit(openai_job(fake.base_url), 1)
        assert obs.state == "pending"
        assert sleeps.delays == [3.0, 3.0]
        assert fake.created_jobs == 1


async def test_500_then_success_backs_off() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI() as fake:
        backend = OpenAIBackend(make_context(objects, sleeps))
        obs = await backend.submit(openai_job(fake.base_url), 1)
        fake.fail_next("GET /v1/fine_tuning/jobs/{id}", 500, times=2)
        obs = await backend.observe(openai_job(fake.base_url, status={"remoteJobId": obs.remote_job_id}), 1)
        assert obs.state == "pending"  # queued after the retries
        assert sleeps.delays == [0.5, 1.0]


async def test_persistent_5xx_is_transient_not_a_failure() -> None:
    objects, sleeps = _setup()
    ctx = make_context(
        objects, sleeps, retry=RetryPolicy(attempts=3, base_delay=1, max_total_delay=10, call_timeout=10)
    )
    async with FakeOpenAI() as fake:
        fake.fail_next("*", 503, times=100)
        with pytest.raises(TransientProviderError) as info:
            await OpenAIBackend(ctx).submit(openai_job(fake.base_url), 1)
        assert info.value.delay > 0
        assert fake.created_jobs == 0


async def test_remote_failure_surfaces_the_provider_error() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI(remote_failure=True) as fake:
        backend = OpenAIBackend(make_context(objects, sleeps))
        obs = await _run_to_end(backend, fake.base_url, await backend.submit(openai_job(fake.base_url), 1))
        assert obs.state == "failed" and obs.reason == "RemoteJobFailed"
        assert "invalid training file" in obs.message


async def test_cancel_cancels_the_remote_job_and_tolerates_missing_ones() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI(polls_per_state=100) as fake:
        backend = OpenAIBackend(make_context(objects, sleeps))
        obs = await backend.submit(openai_job(fake.base_url), 1)
        job = openai_job(fake.base_url, status={"remoteJobId": obs.remote_job_id})
        await backend.cancel(job, 1)
        assert fake.cancelled == [obs.remote_job_id]
        after = await backend.observe(job, 1)
        assert after.state == "failed" and after.reason == "Cancelled"
        await backend.cancel(job, 1)  # already cancelled: no error, no second cancel call
        assert len(fake.calls("POST /v1/fine_tuning/jobs/{id}/cancel")) == 1
        await backend.cancel(openai_job(fake.base_url, uid="never-submitted"), 1)  # nothing remote: fine
        await backend.cancel(openai_job(fake.base_url, status={"remoteJobId": "ftjob-gone"}), 1)  # 404: fine


async def test_restart_reattaches_by_metadata_without_second_job() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI() as fake:
        first = await OpenAIBackend(make_context(objects, sleeps)).submit(openai_job(fake.base_url), 1)
        # The operator died before writing status.remoteJobId: a new instance sees an empty status.
        again = await OpenAIBackend(make_context(objects, sleeps)).submit(openai_job(fake.base_url), 1)
        assert again.remote_job_id == first.remote_job_id
        assert fake.created_jobs == 1
        listed = fake.calls("GET /v1/fine_tuning/jobs")
        assert listed and listed[-1].query.get("metadata[finetune-uid]") == "uid-1"
        # observe without a recorded id also finds it
        seen = await OpenAIBackend(make_context(objects, sleeps)).observe(openai_job(fake.base_url), 1)
        assert seen.remote_job_id == first.remote_job_id
        # a new attempt is a new remote job
        second = await OpenAIBackend(make_context(objects, sleeps)).submit(
            openai_job(fake.base_url, status={"remoteJobId": first.remote_job_id}), 2
        )
        assert second.remote_job_id != first.remote_job_id and fake.created_jobs == 2


async def test_start_job_id_attaches_without_upload() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI() as fake:
        created = await OpenAIBackend(make_context(objects, sleeps)).submit(
            openai_job(fake.base_url, uid="other"), 1
        )
        uploads = len(fake.calls("POST /v1/files"))
        job = openai_job(fake.base_url, uid="attacher", start_job_id=created.remote_job_id, dataset=False)
        obs = await OpenAIBackend(make_context(objects, sleeps)).submit(job, 1)
        assert obs.remote_job_id == created.remote_job_id
        assert fake.created_jobs == 1 and len(fake.calls("POST /v1/files")) == uploads


async def test_provider_refusing_new_jobs_surfaces_its_message() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI(refuse_new_jobs=REFUSAL_MESSAGE) as fake:
        obs = await OpenAIBackend(make_context(objects, sleeps)).submit(openai_job(fake.base_url), 1)
        assert obs.state == "invalid" and obs.reason == "ProviderRefused"
        assert "no longer available for new jobs" in obs.message and "2027-01-06" in obs.message
        assert sleeps.delays == []


async def test_azure_style_endpoint_sends_api_version() -> None:
    objects, sleeps = _setup()
    async with FakeOpenAI() as fake:
        job = openai_job(fake.base_url, endpoint={"baseUrl": fake.base_url, "apiVersion": "2024-10-21"})
        obs = await OpenAIBackend(make_context(objects, sleeps)).submit(job, 1)
        assert obs.state == "pending"
        assert all(r.query.get("api-version") == "2024-10-21" for r in fake.requests)


async def test_missing_secret_is_a_clear_failure() -> None:
    objects = Objects()
    objects.config_map("chat-data", "train.jsonl", GOOD_CHAT)
    async with FakeOpenAI() as fake:
        obs = await OpenAIBackend(make_context(objects, Sleeps())).submit(openai_job(fake.base_url), 1)
        assert obs.state == "invalid" and obs.reason == "SecretNotFound" and "openai" in obs.message
        assert fake.requests == []


def _no_key_anywhere(obs: Observation) -> None:
    text = json.dumps(obs.__dict__, default=str)
    assert API_KEY not in text


@pytest.mark.parametrize("mode", ["ok", "refused"])
async def test_key_never_in_observations(mode: str) -> None:
    objects, sleeps = _setup()
    kwargs: dict[str, Any] = {"refuse_new_jobs": REFUSAL_MESSAGE} if mode == "refused" else {}
    async with FakeOpenAI(**kwargs) as fake:
        backend = OpenAIBackend(make_context(objects, sleeps))
        obs = await backend.submit(openai_job(fake.base_url), 1)
        _no_key_anywhere(obs)
        if obs.remote_job_id:
            _no_key_anywhere(await _run_to_end(backend, fake.base_url, obs))
