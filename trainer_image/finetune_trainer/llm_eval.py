"""Evaluation of the llm engine on the validation file, before and after training: mean loss and perplexity on
the assistant tokens (the tokens training takes its loss on), DPO's preference accuracy, and a few greedy
generations from the validation prompts (kept in result.json for a person to read)."""

from __future__ import annotations

import math
from typing import Any

from .llm_data import ChatData, preference_token_rows, sft_prompt, sft_rows

MAX_EVAL_EXAMPLES = 1000  # bounded evaluation time on large validation files
TEXT_CLIP = 160  # characters of each prompt / reference / output in result.json


def _clip(text: str, limit: int = TEXT_CLIP) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _batches(rows: list[dict[str, list[int]]], size: int) -> list[list[dict[str, list[int]]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def token_logprobs(
    model: Any, rows: list[dict[str, list[int]]], pad_id: int, batch_size: int
) -> list[tuple[float, int]]:
    """(sum of log-probabilities, count) of the masked tokens of each row (right-padded batches)."""
    import torch

    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    with torch.no_grad():
        for batch in _batches(rows, batch_size):
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, r in enumerate(batch):
                n = len(r["input_ids"])
                ids[i, :n] = torch.tensor(r["input_ids"])
                attn[i, :n] = 1
                mask[i, :n] = torch.tensor(r["assistant_masks"], dtype=torch.bool)
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = ids[:, 1:].to(device)
            picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            m = mask[:, 1:].to(device)
            for i in range(len(batch)):
                out.append((float(picked[i][m[i]].sum()), int(m[i].sum())))
    return out


def loss_metrics(pairs: list[tuple[float, int]]) -> dict[str, Any]:
    total = sum(n for _, n in pairs)
    nll = -sum(s for s, _ in pairs) / total if total else 0.0
    return {
        "loss": round(nll, 6),
        "perplexity": round(math.exp(min(nll, 700.0)), 4),
        "examples": len(pairs),
        "assistantTokens": total,
    }


def generations(
    model: Any, tokenizer: Any, data: ChatData, n: int, max_new_tokens: int
) -> list[dict[str, str]]:
    """Greedy completions of the first n validation prompts."""
    import torch

    device = next(model.parameters()).device
    out: list[dict[str, str]] = []
    for ex in data.examples[:n]:
        prompt, reference = sft_prompt(ex)
        enc = tokenizer.apply_chat_template(
            prompt, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            gen = model.generate(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        text = tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        last_user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
        out.append({"prompt": _clip(last_user), "reference": _clip(reference), "output": _clip(text)})
    return out


def evaluate_llm(
    model: Any,
    tokenizer: Any,
    data: ChatData,
    template: str | None,
    max_len: int,
    batch_size: int,
    n_generations: int,
    max_new_tokens: int,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(metrics, generations) on the validation data. SFT data: assistant-token loss; preference data: the loss
    on the preferred outputs, the mean log-probability margin of the preferred over the non-preferred output
    (preferenceMargin) and the fraction of pairs where it is positive (preferenceAccuracy)."""
    was_training = model.training
    model.eval()
    subset = ChatData(data.format, data.examples[:MAX_EVAL_EXAMPLES])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
        if data.format == "preference":
            pairs = preference_token_rows(subset, tokenizer, template, max_len)
            chosen = token_logprobs(model, [c for c, _ in pairs], pad, batch_size)
            rejected = token_logprobs(model, [r for _, r in pairs], pad, batch_size)
            metrics = loss_metrics(chosen)
            # DPO's own quantity: log p(preferred) - log p(non-preferred), summed over each output's tokens
            margins = [c[0] - r[0] for c, r in zip(chosen, rejected, strict=True)]
            metrics["preferenceAccuracy"] = (
                round(sum(m > 0 for m in margins) / len(pairs), 6) if pairs else 0.0
            )
            metrics["preferenceMargin"] = round(sum(margins) / len(pairs), 6) if pairs else 0.0
        else:
            metrics = loss_metrics(
                token_logprobs(model, sft_rows(subset, tokenizer, template, max_len), pad, batch_size)
            )
        gens = generations(model, tokenizer, data, n_generations, max_new_tokens) if n_generations else []
    finally:
        model.train(was_training)
    return metrics, gens
