"""The llm engine's data: OpenAI chat JSONL (method sft) and preference JSONL (method dpo), checked by the same
function the OpenAI engine uses (finetune_operator.backends.preference_format.check_dataset, with its per-line
report), then turned into what TRL's trainers take.

* SFT: each example is rendered with the base model's chat template and tokenized here, with an assistant
  mask (TRL folds a pre-tokenized `assistant_masks` column into the labels): loss on assistant tokens only, and
  not on assistant turns with `weight: 0`. The mask comes from the template's `{% generation %}` markers (the
  model's own template, or TRL's training variant of it); templates without them are masked by rendering each
  prefix of the conversation.
* Tool calls, tool results and tool definitions are kept as text (most chat templates know no tool roles).
* DPO: `{"prompt": messages, "chosen": [assistant], "rejected": [assistant]}` rows (TRL's conversational
  preference format); DPO's loss is on the completions only.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from finetune_operator.api.trainerconfig import TrainerConfig
from finetune_operator.backends.chat_format import DatasetReport
from finetune_operator.backends.preference_format import check_dataset

from .data import DatasetError, storage_options

log = logging.getLogger(__name__)

TEMPLATE_ROLES = ("system", "user", "assistant")


@dataclass
class ChatData:
    """Parsed, checked lines of one chat or preference JSONL file."""

    format: str  # chat | preference
    examples: list[dict[str, Any]]
    report: DatasetReport | None = None
    location: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def read_text(location: str, cfg: TrainerConfig) -> str:
    import fsspec

    try:
        with fsspec.open(location, "r", encoding="utf-8", **storage_options(location, cfg.s3)) as fh:
            return str(fh.read())
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {location}: not found") from exc
    except OSError as exc:
        raise DatasetError(f"dataset {location}: cannot be read: {exc}") from exc


def parse_chat_data(text: str, fmt: str, name: str, limit: int, location: str | None = None) -> ChatData:
    """Check a JSONL file with the OpenAI engine's checker; DatasetError with its per-line report if invalid."""
    report = check_dataset(text, fmt, limit=limit)
    if not report.ok:
        raise DatasetError(f"spec.dataset.{name}: {report.summary()}")
    examples = [json.loads(line) for line in text.splitlines() if line.strip()]
    for warning in report.warnings:
        log.warning("%s: %s", name, warning)
    return ChatData(format=fmt, examples=examples, report=report, location=location)


def split_chat_data(data: ChatData, fraction: float, seed: int) -> tuple[ChatData, ChatData]:
    """Hold out a deterministic fraction of the examples (at least one) for validation."""
    if len(data) < 2:
        raise DatasetError("spec.dataset.train: at least 2 examples are needed to hold out a validation set")
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    n_val = min(len(data) - 1, max(1, round(len(data) * fraction)))
    val = {*order[:n_val]}
    held = [ex for i, ex in enumerate(data.examples) if i in val]
    kept = [ex for i, ex in enumerate(data.examples) if i not in val]
    return (
        ChatData(data.format, kept, data.report, data.location),
        ChatData(data.format, held, None, data.location),
    )


def load_chat_data(cfg: TrainerConfig) -> tuple[ChatData, ChatData]:
    """Train and validation data of an llm job (validation held out of train when not given)."""
    llm = cfg.spec.engine.llm
    if llm is None:
        raise DatasetError("spec.engine.llm: not set")
    fmt = cfg.spec.dataset_format
    if not cfg.train:
        raise DatasetError("train: no training data location in the trainer config")
    train = parse_chat_data(read_text(cfg.train, cfg), fmt, "train", llm.max_seq_length, cfg.train)
    if cfg.validation:
        val = parse_chat_data(
            read_text(cfg.validation, cfg), fmt, "validation", llm.max_seq_length, cfg.validation
        )
        return train, val
    frac = cfg.spec.dataset.validation_split if cfg.spec.dataset is not None else 0.1
    return split_chat_data(train, frac if 0 < frac < 1 else 0.1, cfg.spec.seed)


# ---------------------------------------------------------------------------- messages as text


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if p.get("type") == "text" else "[image]" for p in content)
    return ""


def normalize(messages: list[dict[str, Any]], tools: Any = None) -> tuple[list[dict[str, str]], list[bool]]:
    """Messages as {role, content} strings the chat template renders, and per message whether it is trained
    (assistant turns without `weight: 0`). Tool calls and tool results become text; tool definitions go to
    the system message."""
    out: list[dict[str, str]] = []
    trained: list[bool] = []
    for msg in messages:
        role = str(msg.get("role"))
        text = _text(msg.get("content"))
        calls = msg.get("tool_calls") or ([msg["function_call"]] if msg.get("function_call") else [])
        if calls:
            rendered = json.dumps(calls, separators=(",", ":"), ensure_ascii=False)
            text = (
                f"{text}\n<tool_calls>{rendered}</tool_calls>"
                if text
                else f"<tool_calls>{rendered}</tool_calls>"
            )
        if role in ("tool", "function"):
            ref = msg.get("tool_call_id") or msg.get("name") or ""
            text = f"<tool_result id={ref}>{text}</tool_result>"
            role = "user"
        out.append({"role": role, "content": text})
        trained.append(role == "assistant" and msg.get("weight", 1) != 0)
    if tools:
        spec = "Tools: " + json.dumps(tools, separators=(",", ":"), ensure_ascii=False)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n" + spec}
        else:
            out.insert(0, {"role": "system", "content": spec})
            trained.insert(0, False)
    return out, trained


def preference_row(example: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI preference line as a TRL conversational preference row."""
    inp = example["input"]
    prompt, _ = normalize(inp["messages"], inp.get("tools") or inp.get("functions"))
    chosen, _ = normalize(example["preferred_output"])
    rejected, _ = normalize(example["non_preferred_output"])
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def sft_prompt(example: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """(the conversation up to its last assistant turn, that turn's text): for evaluation generations."""
    if "input" in example:
        row = preference_row(example)
        return row["prompt"], row["chosen"][0]["content"]
    msgs, _ = normalize(example["messages"], example.get("tools") or example.get("functions"))
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return msgs[:last], msgs[last]["content"]


# ---------------------------------------------------------------------------- tokenization


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "{% generation %}" in str(template).replace("{%-", "{%").replace("-%}", "%}")


def training_template(tokenizer: Any) -> str | None:
    """A chat template with generation markers: the model's own, TRL's training variant of it, or None."""
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        raise DatasetError("spec.engine.llm.baseModel: the tokenizer has no chat template")
    if has_generation_markers(own):
        return str(own)
    try:
        from trl.chat_template_utils import get_training_chat_template

        return str(get_training_chat_template(tokenizer))
    except Exception:
        log.info("no training chat template for this tokenizer: masking assistant turns by prefixes")
        return None


def _render(tokenizer: Any, msgs: list[dict[str, str]], template: str | None, **kw: Any) -> Any:
    return tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, chat_template=template, **kw)


def _spans(mask: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            spans.append((start, i))
            start = None
    return spans


def tokenize_chat(
    tokenizer: Any, msgs: list[dict[str, str]], trained: list[bool], template: str | None, max_len: int
) -> dict[str, list[int]]:
    """input_ids and assistant_masks (1 on tokens of trained assistant turns), truncated to max_len."""
    if template is not None:
        out = _render(tokenizer, msgs, template, return_assistant_tokens_mask=True)
        ids = list(out["input_ids"])
        mask = list(out["assistant_masks"])
        spans = _spans(mask)
        turns = [t for m, t in zip(msgs, trained, strict=True) if m["role"] == "assistant"]
        if len(spans) == len(turns):
            for (a, b), keep in zip(spans, turns, strict=True):
                if not keep:
                    mask[a:b] = [0] * (b - a)
            return {"input_ids": ids[:max_len], "assistant_masks": mask[:max_len]}
        log.debug("generation spans do not match the assistant turns: masking by prefixes")
    ids = list(_render(tokenizer, msgs, template)["input_ids"])
    mask = [0] * len(ids)
    for i, (msg, keep) in enumerate(zip(msgs, trained, strict=True)):
        if msg["role"] != "assistant" or not keep:
            continue
        start = len(_render(tokenizer, msgs[:i], template, add_generation_prompt=True)["input_ids"])
        end = len(_render(tokenizer, msgs[: i + 1], template)["input_ids"])
        mask[start:end] = [1] * max(0, end - start)
    return {"input_ids": ids[:max_len], "assistant_masks": mask[:max_len]}


def sft_rows(
    data: ChatData, tokenizer: Any, template: str | None, max_len: int
) -> list[dict[str, list[int]]]:
    """Pre-tokenized SFT rows (examples with no trained token left after truncation are dropped)."""
    rows = []
    for ex in data.examples:
        msgs, trained = normalize(ex["messages"], ex.get("tools") or ex.get("functions"))
        row = tokenize_chat(tokenizer, msgs, trained, template, max_len)
        if any(row["assistant_masks"]):
            rows.append(row)
    if not rows:
        raise DatasetError(
            "spec.dataset: no example has an assistant token to train on within maxSeqLength "
            "(check weight: 0 turns and spec.engine.llm.maxSeqLength)"
        )
    return rows


def preference_token_rows(
    data: ChatData, tokenizer: Any, template: str | None, max_len: int
) -> list[tuple[dict[str, list[int]], dict[str, list[int]]]]:
    """(preferred, non-preferred) pre-tokenized conversations of each preference example, for evaluation."""
    pairs = []
    for ex in data.examples:
        row = preference_row(ex)
        both = []
        for key in ("chosen", "rejected"):
            msgs = [*row["prompt"], *row[key]]
            trained = [i >= len(row["prompt"]) for i in range(len(msgs))]
            both.append(tokenize_chat(tokenizer, msgs, trained, template, max_len))
        pairs.append((both[0], both[1]))
    return pairs
