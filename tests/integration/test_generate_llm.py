"""Dataset generation end to end through the real `openai` SDK against the fake chat-completions server."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.fake_llm import FakeLLM, Fault, minimal_pdf

from finetune_operator.api.finetunejob import GenerateSpec
from finetune_trainer.data import load_dataset, validate_dataset
from finetune_trainer.generate import STATE_FILE, GenerationError, generate_dataset, parse_questions
from finetune_trainer.generate.parsing import normalize_question

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPICS = [
    "operators",
    "adapters",
    "checkpoints",
    "quotas",
    "tokenizers",
    "schedulers",
    "embeddings",
    "corpora",
]


def _write_docs(root: Path) -> Path:
    d = root / "docs"
    d.mkdir()
    para = " ".join(
        f"The {t} section explains item {i} of the {t} design in detail."
        for i in range(12)
        for t in TOPICS[:4]
    )
    (d / "guide.txt").write_text(para, encoding="utf-8")
    (d / "notes.md").write_text(
        "# Notes\n\n"
        + " ".join(
            f"Markdown note {i} describes {t} behaviour under load." for i in range(10) for t in TOPICS[4:]
        )
    )
    (d / "page.html").write_text(
        "<html><head><title>Page</title><script>bad()</script></head><body>"
        + "".join(f"<p>HTML paragraph {i} covers GPU scheduling rule {i * 3}.</p>" for i in range(15))
        + "</body></html>"
    )
    (d / "paper.pdf").write_bytes(
        minimal_pdf([f"PDF line {i} presents finding {i} on retrieval." for i in range(12)])
    )
    return d


def _spec(base_url: str, **kw: Any) -> GenerateSpec:
    body: dict[str, Any] = {
        "documents": [{"configMap": {"name": "docs", "key": "guide"}}],
        "llm": {
            "baseUrl": base_url,
            "model": "fake-model",
            "maxConcurrency": kw.pop("concurrency", 4),
            "maxRetries": kw.pop("max_retries", 5),
        },
        "chunkSize": 256,
        "chunkOverlap": 40,
        "questionsPerChunk": 3,
        "validationFraction": 0.25,
        "saveEvery": kw.pop("save_every", 5),
    }
    body.update(kw)
    return GenerateSpec.model_validate(body)


class SleepRecorder:
    """Stands in for asyncio.sleep: records the backoff delays without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def _all_questions(out: Path) -> list[str]:
    qs: list[str] = []
    for name in ("train.json", "val.json"):
        if (out / name).exists():
            qs += list(json.loads((out / name).read_text())["queries"].values())
    return qs


async def test_end_to_end_from_a_docs_dir(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path)
    out = tmp_path / "out"
    async with FakeLLM(api_key="sk-test-key") as llm:
        result = await generate_dataset(_spec(llm.base_url), [str(docs)], str(out), "sk-test-key")
    report = result.report
    train, val = load_dataset(result.train_path), load_dataset(str(result.validation_path))
    validate_dataset(train)
    validate_dataset(val)
    # every chunk of every format was asked about, with the key, once
    assert report["documents"] == 4
    assert len(llm.chat_requests) == report["chunks"] == report["requests"] > 4
    assert all(r.authorization == "Bearer sk-test-key" and r.model == "fake-model" for r in llm.chat_requests)
    sources = {json.loads(json.dumps(p)) for p in (r.prompt or "" for r in llm.chat_requests)}
    for marker in ("operators section", "Markdown note", "HTML paragraph", "PDF line"):
        assert any(marker in p for p in sources), marker
    assert not any("bad()" in p for p in sources)
    # the questions are exactly what the parser makes of the fake's answers, capped, without duplicates
    expected: list[str] = []
    seen: set[str] = set()
    for r in llm.chat_requests:
        expected += parse_questions(r.answer or "", limit=3, seen=seen).questions
    questions = _all_questions(out)
    assert sorted(questions) == sorted(expected)
    assert len({normalize_question(q) for q in questions}) == len(questions) == report["questions"]
    assert report["questions"] <= 3 * report["chunks"]
    # the split holds out whole chunks: no validation passage is in the training corpus
    assert report["split"] == "by_chunk"
    assert not set(train.corpus) & set(val.corpus)
    assert report["train_queries"] + report["validation_queries"] == report["questions"]
    # token counts come from `usage`
    assert report["prompt_tokens"] == sum(len((r.prompt or "").split()) for r in llm.chat_requests)
    assert report["completion_tokens"] == sum(len((r.answer or "").split()) for r in llm.chat_requests)
    assert report["chunks_short"] == sum(1 for w in report["warnings"] if "of 3 questions" in w)
    saved = json.loads((out / "generation_report.json").read_text())
    assert saved["questions"] == report["questions"]
    assert "sk-test-key" not in (out / "generation_report.json").read_text()
    assert "sk-test-key" not in (out / STATE_FILE).read_text()


async def test_documents_over_http(tmp_path: Path) -> None:
    page = (
        b"<html><body>"
        + b"".join(b"<p>Remote paragraph %d on vector search.</p>" % i for i in range(6))
        + b"</body></html>"
    )
    async with FakeLLM(
        documents={
            "page": (page, "text/html"),
            "paper.pdf": (minimal_pdf(["Remote PDF on rerankers."]), "application/pdf"),
        },
    ) as llm:
        urls = [f"{llm.url}/docs/page", f"{llm.url}/docs/paper.pdf"]
        result = await generate_dataset(_spec(llm.base_url), urls, str(tmp_path / "out"), None)
        prompts = " ".join(r.prompt or "" for r in llm.chat_requests)
        assert "Remote paragraph 3 on vector search." in prompts and "Remote PDF on rerankers." in prompts
        assert "<p>" not in prompts
        assert result.report["documents"] == 2
        with pytest.raises(GenerationError, match=r"/docs/missing"):
            await generate_dataset(
                _spec(llm.base_url), [f"{llm.url}/docs/missing"], str(tmp_path / "o2"), None
            )


async def test_500_then_success(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path)
    sleep = SleepRecorder()
    async with FakeLLM(faults=[Fault(500), Fault(503)]) as llm:
        result = await generate_dataset(
            _spec(llm.base_url, concurrency=1), [str(docs)], str(tmp_path / "out"), None, sleep=sleep
        )
    statuses = [r.status for r in llm.chat_requests]
    assert statuses[:3] == [500, 503, 200]
    assert result.report["retries"] == 2 and result.report["failed_requests"] == 2
    assert result.report["requests"] == result.report["chunks"] + 2
    assert len(sleep.delays) == 2 and sleep.delays[1] > sleep.delays[0]  # exponential backoff


async def test_429_honours_retry_after(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("A single short document about rate limits and quotas.")
    async with FakeLLM(faults=[Fault(429, retry_after="1")]) as llm:
        result = await generate_dataset(_spec(llm.base_url), [str(docs)], str(tmp_path / "out"), None)
    first, second = llm.chat_requests[0], llm.chat_requests[1]
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95  # waited for Retry-After, not only the 0.5 s backoff
    assert result.report["retries"] == 1


async def test_retry_after_longer_than_backoff_is_used(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("A single short document about rate limits and quotas.")
    sleep = SleepRecorder()
    async with FakeLLM(faults=[Fault(429, retry_after="7")]) as llm:
        await generate_dataset(_spec(llm.base_url), [str(docs)], str(tmp_path / "out"), None, sleep=sleep)
    assert sleep.delays == [7.0]


async def test_unreachable_llm_is_a_clear_retryable_error(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    sleep = SleepRecorder()
    with pytest.raises(GenerationError, match=rf"LLM at {url}: unreachable .* after 3 attempt") as info:
        await generate_dataset(
            _spec(url, max_retries=2, concurrency=1), [str(docs)], str(tmp_path / "out"), None, sleep=sleep
        )
    assert info.value.retryable
    assert len(sleep.delays) == 2


async def test_wrong_key_fails_at_once_without_leaking_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docs = _write_docs(tmp_path)
    async with FakeLLM(api_key="right-key") as llm:
        with pytest.raises(GenerationError, match=r"refused the request .*HTTP 401") as info:
            await generate_dataset(_spec(llm.base_url), [str(docs)], str(tmp_path / "out"), "wrong-key-123")
    assert not info.value.retryable
    assert llm.base_url in info.value.message
    assert "wrong-key-123" not in info.value.message and "wrong-key-123" not in caplog.text


async def test_bad_documents_fail_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.txt").write_text("Fine text.")
    (bad / "core.txt").write_bytes(bytes(range(256)))
    async with FakeLLM() as llm:
        with pytest.raises(GenerationError, match="empty"):
            await generate_dataset(_spec(llm.base_url), [str(tmp_path / "empty")], str(tmp_path / "o1"), None)
        with pytest.raises(GenerationError, match=r"core\.txt"):
            await generate_dataset(_spec(llm.base_url), [str(bad)], str(tmp_path / "o2"), None)
    assert llm.chat_requests == []


async def test_cancelled_run_resumes_without_duplicates(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path)
    out = tmp_path / "out"
    async with FakeLLM(delay=0.02) as llm:
        spec = _spec(llm.base_url, concurrency=1, save_every=3)
        task = asyncio.create_task(generate_dataset(spec, [str(docs)], str(out), None))
        while sum(1 for r in llm.chat_requests if r.answer) < 7:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        saved = json.loads((out / STATE_FILE).read_text())["chunks"]
        assert len(saved) >= 6
        assert not (out / "train.json").exists()
        first_run = len(llm.chat_requests)
        result = await generate_dataset(spec, [str(docs)], str(out), None)
    second_prompts = [r.prompt or "" for r in llm.chat_requests[first_run:]]
    assert result.report["chunks_resumed"] == len(saved)
    assert len(second_prompts) == result.report["chunks"] - len(saved)
    # no saved chunk was asked again
    done_texts = {_context(r.prompt or "") for r in llm.chat_requests[:first_run] if r.answer}
    assert len({_context(p) for p in second_prompts} & done_texts) <= 1  # at most the one in flight
    questions = _all_questions(out)
    assert len({normalize_question(q) for q in questions}) == len(questions) == result.report["questions"]
    assert result.report["runs"] == 2


def _context(prompt: str) -> str:
    return prompt.split("---------------------")[1]
