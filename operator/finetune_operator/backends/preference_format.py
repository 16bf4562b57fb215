"""OpenAI's preference (DPO) JSONL, checked with chat_format's message checks, and `check_dataset`: the one
check both chat engines run (openai: chat; llm: chat for method sft, preference for method dpo), so a file that
passes for one engine passes for the other. Pure: no I/O.

A preference line: `{"input": {"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool},
"preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [{"role": "assistant", ...}]}`.
"""

from __future__ import annotations

from typing import Any

from .chat_format import (
    DEFAULT_CONTEXT_LIMIT,
    DatasetReport,
    TokenCounter,
    _check_message,
    _count_example,
    _iter_lines,
    check_chat_jsonl,
    token_counter,
)

PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
PREFERENCE_INPUT_KEYS = frozenset({"messages", "functions", "tools", "parallel_tool_calls"})


def _check_output(number: int, key: str, value: Any, report: DatasetReport) -> None:
    """preferred_output / non_preferred_output: a list of exactly one assistant message."""
    if not isinstance(value, list) or len(value) != 1:
        report.add_error(number, f"invalid_{key}", f"{key} must be a list of one assistant message")
        return
    if not _check_message(number, 0, value[0], report, key):
        report.add_error(number, f"invalid_{key}", f"{key}[0] must have role assistant")
    elif "weight" in value[0]:
        report.add_error(number, "invalid_weight", f"{key}[0].weight is not allowed in preference data")


def check_preference_jsonl(
    data: bytes | str, *, counter: TokenCounter | None = None, limit: int = DEFAULT_CONTEXT_LIMIT
) -> DatasetReport:
    """Check OpenAI preference (DPO) JSONL; see the module docstring."""
    report = DatasetReport(format="preference")
    counter = counter or token_counter()
    for number, example in _iter_lines(data, report):
        if not isinstance(example, dict):
            report.add_error(number, "data_type", "line is not a JSON object")
            continue
        if "messages" in example:
            report.add_error(
                number,
                "chat_line",
                "a chat (SFT) example in preference data: method dpo needs "
                "input.messages, preferred_output and non_preferred_output",
            )
            continue
        unknown = sorted(set(example) - PREFERENCE_KEYS)
        if unknown:
            report.add_error(
                number,
                "unrecognized_key",
                f"unknown keys {unknown} (expected input, preferred_output, non_preferred_output)",
            )
        errors_before = report.error_count
        inp = example.get("input")
        messages = inp.get("messages") if isinstance(inp, dict) else None
        if not isinstance(inp, dict) or not isinstance(messages, list) or not messages:
            report.add_error(number, "missing_messages_list", "input.messages must be a non-empty list")
        else:
            bad = sorted(set(inp) - PREFERENCE_INPUT_KEYS)
            if bad:
                report.add_error(number, "unrecognized_key", f"input has unknown keys {bad}")
            for i, msg in enumerate(messages):
                _check_message(number, i, msg, report, "input.messages")
        for key in ("preferred_output", "non_preferred_output"):
            _check_output(number, key, example.get(key), report)
        if report.error_count == errors_before and isinstance(inp, dict):
            msgs = [*inp["messages"], *example["preferred_output"]]
            tokens = _count_example({"messages": msgs, "tools": inp.get("tools")}, counter)
            report.token_counts.append(tokens)
            if tokens > limit:
                report.over_limit_lines.append(number)
    report.counter, report.context_limit = counter.name, limit
    return report


def check_dataset(
    data: bytes | str,
    fmt: str,
    *,
    model: str | None = None,
    epochs: int | None = None,
    limit: int | None = None,
) -> DatasetReport:
    """The one check both chat engines run: `fmt` chat (OpenAI sft, llm sft) or preference (llm dpo).
    `limit` set: in-cluster training, truncated at `limit` tokens and not billed."""
    if fmt == "preference":
        return check_preference_jsonl(data, limit=limit or DEFAULT_CONTEXT_LIMIT)
    if fmt != "chat":
        raise ValueError(f"no JSONL check for dataset format {fmt!r}")
    if model:
        return check_chat_jsonl(data, model=model, epochs=epochs, limit=limit, billed=limit is None)
    return check_chat_jsonl(data, epochs=epochs, limit=limit, billed=limit is None)
