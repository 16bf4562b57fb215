"""The dataset checks of the hosted engines, and the example manifests of examples/openai and examples/gradient."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from finetune_operator.api import parse_job
from finetune_operator.backends.chat_format import (
    TokenCounter,
    approx_token_count,
    check_chat_jsonl,
    check_inputs_jsonl,
    context_limit,
    default_epochs,
    token_counter,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _ex(*messages: Mapping[str, object], **extra: object) -> str:
    return json.dumps({"messages": list(messages), **extra})


SYS = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "What is two plus two?"}
ASSISTANT = {"role": "assistant", "content": "Four."}


def test_valid_examples_counted_and_billed() -> None:
    words = TokenCounter("words", lambda s: len(s.split()))
    data = "\n".join([_ex(SYS, USER, ASSISTANT)] * 40) + "\n\n"
    report = check_chat_jsonl(data, epochs=2, counter=words)
    assert report.ok and report.examples == 40 and report.counter == "words"
    # 3 reply + 3 per message + words of role and content: system(1+2) user(1+5) assistant(1+1)
    assert report.token_counts[0] == 3 + 3 * 3 + 3 + 6 + 2
    assert report.billed_tokens == 40 * report.token_counts[0] * 2
    assert "40 valid chat examples" in report.summary()


def test_default_epochs_follow_openai() -> None:
    assert default_epochs(40) == 3
    assert default_epochs(10) == 10  # small sets get more passes (100 // 10)
    assert default_epochs(20000) == 1
    report = check_chat_jsonl(_ex(USER, ASSISTANT), counter=TokenCounter("one", lambda s: 1))
    assert report.epochs == 25  # a single example: min(25, 100 // 1)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("[1, 2]", "data_type"),
        ("{broken", "invalid_json"),
        (json.dumps({"prompt": "x"}), "unrecognized_key"),
        (json.dumps({"messages": []}), "missing_messages_list"),
        (_ex(USER), "example_missing_assistant_message"),
        (_ex({"role": "robot", "content": "x"}, ASSISTANT), "unrecognized_role"),
        (_ex(USER, {"role": "assistant", "content": "  "}), "empty_content"),
        (_ex(USER, {"role": "assistant"}), "missing_content"),
        (_ex({"content": "x"}, ASSISTANT), "message_missing_key"),
        (_ex(USER, {"role": "assistant", "content": "x", "mood": "happy"}), "message_unrecognized_key"),
        (_ex(USER, {"role": "assistant", "content": "x", "weight": 2}), "invalid_weight"),
        (_ex(USER, {"role": "assistant", "content": 5}), "invalid_content"),
        (_ex(USER, ASSISTANT, {"role": "tool", "content": "42"}), "missing_tool_call_id"),
        (_ex(USER, ASSISTANT, tools={"not": "a list"}), "invalid_tools"),
    ],
)
def test_each_error_is_reported_with_its_line(line: str, code: str) -> None:
    report = check_chat_jsonl(_ex(USER, ASSISTANT) + "\n" + line)
    assert not report.ok
    assert [(e.line, e.code) for e in report.errors if e.code == code] == [(2, code)]
    assert f"line 2: {code}" in report.summary()


def test_function_calls_and_tools_are_valid() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
        ],
    }
    tool = {"role": "tool", "tool_call_id": "c1", "content": "4"}
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    report = check_chat_jsonl(_ex(USER, call, tool, ASSISTANT, tools=tools))
    assert report.ok, report.summary()
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}],
    }
    assert check_chat_jsonl(_ex(parts, ASSISTANT)).ok


def test_long_examples_are_flagged_and_billing_is_capped() -> None:
    counter = TokenCounter("chars", len)
    long = {"role": "user", "content": "x" * 20000}
    report = check_chat_jsonl(
        _ex(USER, ASSISTANT) + "\n" + _ex(long, ASSISTANT),
        model="gpt-3.5-turbo-0125",
        epochs=1,
        counter=counter,
    )
    assert report.ok and report.over_limit_lines == [2] and report.context_limit == 16385
    assert report.billed_tokens == report.token_counts[0] + 16385
    assert "will be truncated" in report.summary()


def test_summary_is_bounded() -> None:
    data = "\n".join(["{broken"] * 500)
    report = check_chat_jsonl(data)
    assert report.error_count == 500 and len(report.errors) == 50
    text = report.summary(300)
    assert len(text) <= 300 and "more" in text


def test_token_counter_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: approximate counter
    counter = token_counter("gpt-4o-mini")
    assert counter.name == "approx-wordpiece"
    assert counter.count("Hello, world!") == approx_token_count("Hello, world!") == 4
    assert approx_token_count("internationalization") == 5
    assert context_limit("gpt-4o-mini-2024-07-18") == 65536 and context_limit("unknown") == 16385


def test_gradient_inputs() -> None:
    good = "\n".join(
        [
            json.dumps({"inputs": "a"}),
            json.dumps({"inputs": "b", "multiplier": 2}),
            json.dumps({"inputs": [{"value": "c", "trainable": False}]}),
        ]
    )
    report, samples = check_inputs_jsonl(good)
    assert report.ok and samples[1] == {"inputs": "b", "multiplier": 2.0} and len(samples) == 3
    bad = "\n".join(
        [
            json.dumps({"inputs": ""}),
            json.dumps({"inputs": "x", "multiplier": -1}),
            json.dumps({"inputs": [{"text": "x"}]}),
            "7",
        ]
    )
    report, samples = check_inputs_jsonl(bad)
    assert samples == []
    assert [(e.line, e.code) for e in report.errors] == [
        (1, "empty_inputs"),
        (2, "invalid_multiplier"),
        (3, "invalid_inputs"),
        (4, "data_type"),
    ]


@pytest.mark.parametrize("engine", ["openai", "gradient"])
def test_examples_parse_and_use_placeholders(engine: str) -> None:
    folder = ROOT / "examples" / engine
    docs = {
        d["kind"]: d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d
    }
    job = parse_job(docs["FinetuneJob"])
    assert job.spec.engine.kind.value == engine
    secret = docs["Secret"]
    assert set(secret["stringData"].values()) == {"REPLACE_ME"} and "data" not in secret
    data = next(iter(docs["ConfigMap"]["data"].values()))
    if engine == "openai":
        assert check_chat_jsonl(data).ok
    else:
        assert check_inputs_jsonl(data)[0].ok
