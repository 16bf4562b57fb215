"""Dataset checks done before anything is uploaded to a hosted provider.

`check_chat_jsonl` follows OpenAI's cookbook format checker ("Data preparation and analysis for chat model
fine-tuning"): per line valid JSON, a `messages` list, known roles and keys, content present and not empty,
at least one assistant message, optional `functions`/`tools`; token counts per example, examples over the
context limit, and the estimated billed tokens for the chosen (or default) number of epochs.

The preference (DPO) format is checked with the same message checks in preference_format.py, whose
`check_dataset` is the one entry point of both the OpenAI and the llm engine (a file that passes for one passes
for the other).

`check_inputs_jsonl` checks Gradient's `{"inputs": str | [StructuredInput], "multiplier"?: number}` lines.

Token counting: tiktoken downloads its BPE files from the internet on first use, which an operator must
never do. `token_counter()` uses tiktoken only when the encoding's file is already in tiktoken's cache
(`TIKTOKEN_CACHE_DIR`, e.g. baked into the image); otherwise it uses an approximate regex word-piece
counter (`approx-wordpiece`: one token per punctuation mark, max(1, round(len/4)) per word, one per
non-ASCII character), which slightly overestimates English text. The report names the counter used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_REPORTED_ERRORS = 50
DEFAULT_CONTEXT_LIMIT = 16385
# Training context per model family (longest prefix wins); OpenAI's published limits for fine-tuning.
CONTEXT_LIMITS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 65536),
    ("gpt-4o-mini", 65536),
    ("gpt-4o", 65536),
    ("gpt-3.5-turbo", 16385),
    ("babbage-002", 16385),
    ("davinci-002", 16385),
)
# Default epochs chosen by OpenAI when n_epochs is unset (cookbook heuristic).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

ROLES = ("system", "user", "assistant", "tool", "function")
MESSAGE_KEYS = frozenset({"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"})
EXAMPLE_KEYS = frozenset({"messages", "functions", "tools", "parallel_tool_calls"})
CONTENT_PART_TYPES = ("text", "image_url")
INPUTS_KEYS = frozenset({"inputs", "multiplier"})
STRUCTURED_INPUT_KEYS = frozenset({"value", "trainable", "parse_special_tokens"})

_TIKTOKEN_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
_WORDPIECE = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


# ---------------------------------------------------------------------------- token counting


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of a string; `name` says which counter it is (exact tiktoken or approximate)."""

    name: str
    count: Callable[[str], int]


def approx_token_count(text: str) -> int:
    """Approximate token count: max(1, round(len/4)) per ASCII word, one per punctuation or other character."""
    total = 0
    for piece in _WORDPIECE.findall(text):
        is_word = piece[0] == "_" or (piece[0].isascii() and piece[0].isalnum())
        total += max(1, round(len(piece) / 4)) if is_word else 1
    return total


def _tiktoken_cache_path(url: str) -> str | None:
    """Where tiktoken keeps a downloaded file (mirrors tiktoken.load.read_file_cached)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def encoding_for_model(model: str) -> str:
    """The tiktoken encoding of an OpenAI model family."""
    if model.startswith(("gpt-3.5", "gpt-4-", "babbage", "davinci")) or model == "gpt-4":
        return "cl100k_base"
    return "o200k_base"


def token_counter(model: str = "gpt-4o-mini") -> TokenCounter:
    """tiktoken if its BPE file is cached locally (never downloads), else the approximate counter."""
    encoding = encoding_for_model(model)
    path = _tiktoken_cache_path(_TIKTOKEN_URLS[encoding])
    if path is not None and os.path.exists(path):
        try:
            import tiktoken

            enc = tiktoken.get_encoding(encoding)
            return TokenCounter(
                name=f"tiktoken:{encoding}", count=lambda s: len(enc.encode(s, disallowed_special=()))
            )
        except Exception:  # a corrupt cache falls back to the estimate
            pass
    return TokenCounter(name="approx-wordpiece", count=approx_token_count)


def context_limit(model: str) -> int:
    """Training context limit (tokens per example) of a model; fine-tuned ids `ft:BASE:...` use BASE."""
    base = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 1 else model
    for prefix, limit in CONTEXT_LIMITS:
        if base.startswith(prefix):
            return limit
    return DEFAULT_CONTEXT_LIMIT


def default_epochs(n_examples: int) -> int:
    """The epochs OpenAI picks when n_epochs is unset (3, more for tiny sets, fewer for huge ones)."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


# ---------------------------------------------------------------------------- report


@dataclass(frozen=True)
class LineError:
    """One problem on one line (1-based) of a JSONL file."""

    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.code}: {self.message}"


@dataclass
class DatasetReport:
    """The outcome of a dataset check."""

    format: str
    examples: int = 0
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)
    over_limit_lines: list[int] = field(default_factory=list)
    context_limit: int | None = None
    epochs: int | None = None
    billed_tokens: int | None = None
    counter: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.examples > 0

    def add_error(self, line: int, code: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, code, message))

    def summary(self, max_chars: int = 1024) -> str:
        """A bounded, human-readable summary (fits a condition message)."""
        if self.ok:
            text = f"{self.examples} valid {self.format} examples"
            if self.billed_tokens is not None:
                text += (
                    f", ~{self.billed_tokens} billed tokens over {self.epochs} epochs "
                    f"(counter {self.counter})"
                )
            if self.over_limit_lines:
                text += (
                    f"; {len(self.over_limit_lines)} examples over the {self.context_limit}-token context "
                    f"limit will be truncated (lines {_lines(self.over_limit_lines)})"
                )
            return _clip(text, max_chars)
        if self.examples == 0 and self.error_count == 0:
            return f"invalid {self.format} dataset: no examples"
        head = f"invalid {self.format} dataset: {self.error_count} errors in {self.examples} lines: "
        parts: list[str] = []
        used = len(head)
        for err in self.errors:
            piece = str(err)
            if used + len(piece) + 2 > max_chars - 40:
                break
            parts.append(piece)
            used += len(piece) + 2
        text = head + "; ".join(parts)
        if len(parts) < self.error_count:
            text += f"; ... and {self.error_count - len(parts)} more"
        return _clip(text, max_chars)


def _lines(lines: list[int], limit: int = 10) -> str:
    out = ", ".join(str(n) for n in lines[:limit])
    return out + (", ..." if len(lines) > limit else "")


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _iter_lines(data: bytes | str, report: DatasetReport) -> list[tuple[int, Any]]:
    """Parse JSONL; blank lines are skipped; undecodable lines become errors."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    out: list[tuple[int, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        report.examples += 1
        try:
            out.append((number, json.loads(raw)))
        except json.JSONDecodeError as exc:
            report.add_error(number, "invalid_json", f"not valid JSON ({exc.msg} at column {exc.colno})")
    return out


# ---------------------------------------------------------------------------- chat format


def _content_text(content: Any) -> str | None:
    """The text of a message's content (string or list of parts); None when the shape is wrong."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in CONTENT_PART_TYPES:
                return None
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    return None
                texts.append(part["text"])
            else:
                texts.append("[image]")
        return "\n".join(texts)
    return None


def _check_message(
    number: int, index: int, msg: Any, report: DatasetReport, list_name: str = "messages"
) -> bool:
    """Check one message; returns whether it is an assistant message."""
    where = f"{list_name}[{index}]"
    if not isinstance(msg, dict):
        report.add_error(number, "message_not_object", f"{where} is not an object")
        return False
    unknown = sorted(set(msg) - MESSAGE_KEYS)
    if unknown:
        report.add_error(number, "message_unrecognized_key", f"{where} has unknown keys {unknown}")
    role = msg.get("role")
    if "role" not in msg:
        report.add_error(number, "message_missing_key", f"{where} has no role")
    elif role not in ROLES:
        report.add_error(
            number, "unrecognized_role", f"{where}.role {role!r} is not one of {', '.join(ROLES)}"
        )
    has_call = bool(msg.get("function_call") or msg.get("tool_calls"))
    if has_call and role != "assistant":
        report.add_error(
            number, "call_not_from_assistant", f"{where} has function_call/tool_calls but role {role!r}"
        )
    content = msg.get("content")
    if content is None:
        if not has_call:
            report.add_error(
                number, "missing_content", f"{where} has no content (and no function_call/tool_calls)"
            )
    else:
        text = _content_text(content)
        if text is None:
            report.add_error(
                number,
                "invalid_content",
                f"{where}.content must be a string or a list of text/image_url parts",
            )
        elif not text.strip() and not has_call:
            report.add_error(number, "empty_content", f"{where}.content is empty")
    if "weight" in msg:
        if msg["weight"] not in (0, 1) or isinstance(msg["weight"], bool):
            report.add_error(number, "invalid_weight", f"{where}.weight must be 0 or 1")
        elif role != "assistant":
            report.add_error(
                number, "invalid_weight", f"{where}.weight is only allowed on assistant messages"
            )
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        report.add_error(number, "missing_tool_call_id", f"{where} (role tool) needs a tool_call_id")
    return role == "assistant"


def _count_example(example: dict[str, Any], counter: TokenCounter) -> int:
    """Tokens of one example as the cookbook counts them: 3 per message, 1 per name, 3 for the reply."""
    total = 3
    for msg in example["messages"]:
        if not isinstance(msg, dict):
            continue
        total += 3
        for key, value in msg.items():
            if key == "weight":
                continue
            if key == "content":
                total += counter.count(_content_text(value) or "")
            elif isinstance(value, str):
                total += counter.count(value)
            elif value is not None:
                total += counter.count(json.dumps(value, separators=(",", ":")))
            if key == "name":
                total += 1
    for key in ("functions", "tools"):
        if example.get(key):
            total += counter.count(json.dumps(example[key], separators=(",", ":")))
    return total


def check_chat_jsonl(
    data: bytes | str,
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    epochs: int | None = None,
    counter: TokenCounter | None = None,
    limit: int | None = None,
    billed: bool = True,
) -> DatasetReport:
    """Check an OpenAI chat fine-tuning JSONL file; see the module docstring. `limit` overrides the model's
    context limit; `billed=False` (in-cluster training) leaves out the billed-token estimate."""
    report = DatasetReport(format="chat")
    counter = counter or token_counter(model)
    limit = limit or context_limit(model)
    for number, example in _iter_lines(data, report):
        if not isinstance(example, dict):
            report.add_error(number, "data_type", "line is not a JSON object")
            continue
        if "preferred_output" in example or "input" in example:
            report.add_error(
                number, "preference_line", "a preference (DPO) example in chat data: use method dpo for it"
            )
            continue
        unknown = sorted(set(example) - EXAMPLE_KEYS)
        if unknown:
            report.add_error(
                number,
                "unrecognized_key",
                f"unknown keys {unknown} (expected messages, functions, tools, parallel_tool_calls)",
            )
        messages = example.get("messages")
        if not isinstance(messages, list) or not messages:
            report.add_error(number, "missing_messages_list", "messages must be a non-empty list")
            continue
        for key in ("functions", "tools"):
            if key in example and not isinstance(example[key], list):
                report.add_error(number, f"invalid_{key}", f"{key} must be a list")
        errors_before = report.error_count
        assistants = [_check_message(number, i, m, report) for i, m in enumerate(messages)]
        if not any(assistants):
            report.add_error(number, "example_missing_assistant_message", "no assistant message")
        if report.error_count == errors_before:
            tokens = _count_example(example, counter)
            report.token_counts.append(tokens)
            if tokens > limit:
                report.over_limit_lines.append(number)
    report.counter = counter.name
    report.context_limit = limit
    if report.ok and billed:
        report.epochs = epochs or default_epochs(report.examples)
        report.billed_tokens = sum(min(t, limit) for t in report.token_counts) * report.epochs
        if report.over_limit_lines:
            report.warnings.append(
                f"{len(report.over_limit_lines)} examples exceed the {limit}-token context "
                "limit and will be truncated"
            )
    return report


# ---------------------------------------------------------------------------- gradient inputs


def check_inputs_jsonl(data: bytes | str) -> tuple[DatasetReport, list[dict[str, Any]]]:
    """Check Gradient `inputs` JSONL; returns the report and the samples (SDK `Sample` dicts) when valid."""
    report = DatasetReport(format="inputs")
    samples: list[dict[str, Any]] = []
    for number, obj in _iter_lines(data, report):
        if not isinstance(obj, dict):
            report.add_error(number, "data_type", "line is not a JSON object")
            continue
        unknown = sorted(set(obj) - INPUTS_KEYS)
        if unknown:
            report.add_error(
                number, "unrecognized_key", f"unknown keys {unknown} (expected inputs, multiplier)"
            )
        inputs = obj.get("inputs")
        if isinstance(inputs, str):
            if not inputs.strip():
                report.add_error(number, "empty_inputs", "inputs is empty")
        elif isinstance(inputs, list) and inputs:
            for i, part in enumerate(inputs):
                if not isinstance(part, dict) or not isinstance(part.get("value"), str):
                    report.add_error(
                        number, "invalid_inputs", f"inputs[{i}] must be an object with a string value"
                    )
                elif set(part) - STRUCTURED_INPUT_KEYS:
                    report.add_error(
                        number,
                        "invalid_inputs",
                        f"inputs[{i}] has unknown keys {sorted(set(part) - STRUCTURED_INPUT_KEYS)}",
                    )
        else:
            report.add_error(
                number,
                "missing_inputs",
                "inputs must be a non-empty string or list of {value, trainable?, parse_special_tokens?}",
            )
        if "multiplier" in obj:
            mult = obj["multiplier"]
            if (
                isinstance(mult, bool)
                or not isinstance(mult, int | float)
                or not math.isfinite(mult)
                or mult < 0
            ):
                report.add_error(number, "invalid_multiplier", "multiplier must be a non-negative number")
        if report.error_count == 0:
            sample: dict[str, Any] = {"inputs": inputs}
            if "multiplier" in obj:
                sample["multiplier"] = float(obj["multiplier"])
            samples.append(sample)
    return report, (samples if report.ok else [])
