"""The llm engine's data: one check for both chat engines, preference lines, messages as template input
(tool calls as text, weight 0), and the assistant-token masks (generation markers and the prefix fallback)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.llm_fixtures import CHAT_TEMPLATE, example_data, tiny_llama

from finetune_operator.backends.chat_format import check_chat_jsonl
from finetune_operator.backends.preference_format import check_dataset, check_preference_jsonl
from finetune_trainer.data import DatasetError
from finetune_trainer.llm_data import (
    ChatData,
    normalize,
    parse_chat_data,
    preference_row,
    sft_rows,
    split_chat_data,
    tokenize_chat,
    training_template,
)

pytestmark = pytest.mark.unit


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


PREF = {
    "input": {"messages": [{"role": "user", "content": "Hi?"}]},
    "preferred_output": [{"role": "assistant", "content": "Hello."}],
    "non_preferred_output": [{"role": "assistant", "content": "No."}],
}


def test_one_check_for_both_engines() -> None:
    text = example_data("sft")["train.jsonl"]
    for_openai = check_dataset(text, "chat", model="gpt-4o-mini-2024-07-18", epochs=3)
    for_llm = check_dataset(text, "chat", limit=1024)
    assert for_openai.ok and for_llm.ok and for_openai.examples == for_llm.examples == 14
    assert for_openai.billed_tokens and for_llm.billed_tokens is None  # in-cluster training is not billed
    assert for_openai.summary().startswith("14 valid chat examples")
    # the same per-line report for the same bad file
    bad = text.replace('"content": "Delete', '"content": 3, "x": "Delete', 1)
    assert check_dataset(bad, "chat").summary() == check_chat_jsonl(bad).summary()
    assert not check_dataset(bad, "chat", limit=1024).ok


def test_preference_checks() -> None:
    assert check_preference_jsonl(example_data("dpo")["train.jsonl"]).ok
    lines = [
        _line(PREF),
        _line({**PREF, "preferred_output": [{"role": "user", "content": "x"}]}),
        _line({k: v for k, v in PREF.items() if k != "non_preferred_output"}),
        _line({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        _line({**PREF, "input": {"messages": []}}),
        _line({**PREF, "preferred_output": [{"role": "assistant", "content": "a", "weight": 0}]}),
    ]
    report = check_preference_jsonl("\n".join(lines))
    codes = {(e.line, e.code) for e in report.errors}
    assert (2, "invalid_preferred_output") in codes
    assert (3, "invalid_non_preferred_output") in codes
    assert (4, "chat_line") in codes
    assert (5, "missing_messages_list") in codes
    assert (6, "invalid_weight") in codes
    assert not any(line == 1 for line, _ in codes)
    assert "invalid preference dataset: 5 errors in 6 lines" in report.summary()
    # and a preference line in chat data is named as such
    chat = check_chat_jsonl(_line(PREF))
    assert [e.code for e in chat.errors] == ["preference_line"]


def test_parse_refuses_with_the_report_naming_the_file() -> None:
    with pytest.raises(DatasetError) as info:
        parse_chat_data('{"messages": []}\n', "chat", "validation", 512)
    assert info.value.message.startswith("spec.dataset.validation: invalid chat dataset: 1 errors")
    assert "line 1: missing_messages_list" in info.value.message


def test_normalize_tool_calls_and_weights() -> None:
    ex = json.loads(example_data("sft")["train.jsonl"].splitlines()[-1])  # the tool-call example
    msgs, trained = normalize(ex["messages"], ex["tools"])
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("Tools: ")
    assert '<tool_calls>[{"id":"call_1"' in msgs[2]["content"] and '"get_phase"' in msgs[2]["content"]
    assert msgs[3] == {"role": "user", "content": "<tool_result id=call_1>Succeeded</tool_result>"}
    assert trained == [False, False, True, False, True]
    weighted = json.loads(example_data("sft")["train.jsonl"].splitlines()[-2])
    _, trained = normalize(weighted["messages"])
    assert trained == [False, False, False, False, True]  # the weight 0 assistant turn is not trained


def test_split_is_deterministic() -> None:
    data = ChatData("chat", [{"i": i} for i in range(10)])
    a_train, a_val = split_chat_data(data, 0.2, seed=7)
    _, b_val = split_chat_data(data, 0.2, seed=7)
    assert a_val.examples == b_val.examples and len(a_val) == 2 and len(a_train) == 8
    with pytest.raises(DatasetError):
        split_chat_data(ChatData("chat", [{}]), 0.2, seed=1)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama()))


def _masked_text(tok: Any, row: dict[str, list[int]]) -> str:
    return str(tok.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True) if m]))


def test_mask_covers_trained_assistant_turns_only(tokenizer: Any) -> None:
    msgs = [
        {"role": "user", "content": "Is it fast?"},
        {"role": "assistant", "content": "No idea."},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Yes, fast."},
    ]
    template = training_template(tokenizer)
    assert template == CHAT_TEMPLATE
    row = tokenize_chat(tokenizer, msgs, [False, False, False, True], template, 512)
    assert _masked_text(tokenizer, row) == "Yes, fast.<|end|>"
    both = tokenize_chat(tokenizer, msgs, [False, True, False, True], template, 512)
    assert _masked_text(tokenizer, both) == "No idea.<|end|>Yes, fast.<|end|>"
    # a template without generation markers: masked by rendering prefixes, the same tokens
    plain = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    own = tokenizer.chat_template
    tokenizer.chat_template = plain
    try:
        fallback = tokenize_chat(tokenizer, msgs, [False, True, False, True], None, 512)
    finally:
        tokenizer.chat_template = own
    assert fallback == both
    truncated = tokenize_chat(tokenizer, msgs, [False, True, False, True], template, 8)
    assert len(truncated["input_ids"]) == len(truncated["assistant_masks"]) == 8


def test_rows_drop_examples_without_trained_tokens(tokenizer: Any) -> None:
    text = example_data("sft")["train.jsonl"]
    data = parse_chat_data(text, "chat", "train", 512)
    rows = sft_rows(data, tokenizer, CHAT_TEMPLATE, 512)
    assert len(rows) == len(data)
    with pytest.raises(DatasetError, match="maxSeqLength"):
        sft_rows(data, tokenizer, CHAT_TEMPLATE, 4)  # only prompt tokens fit


def test_preference_row_is_trl_conversational() -> None:
    row = preference_row(PREF)
    assert row == {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
