"""LoRA SFT throughput of the llm engine on one CUDA GPU: tokens per second and model FLOP utilisation on a
randomly initialised Llama of about 0.5B parameters (Qwen2.5-0.5B's shape with a 32k vocabulary), in bf16 and
then with the base in 4-bit (QLoRA). A real checkpoint cannot be downloaded on the GPU machine, and a random
model measures speed honestly (the loss is meaningless, the FLOPs are the same).

    python3 bench/gpu_trainer.py llm --out $OUT          # on the GPU machine (needs peft, trl; bitsandbytes
                                                         # for the 4-bit row, else that row says why not)
    .venv/bin/python bench/gpu_trainer.py llm --smoke    # CPU check of the whole script, tiny model

Each row runs the engine itself (finetune_trainer.engine_llm.LlmRunner: prepare, then train on TRL's
SFTTrainer with the PEFT adapter on every linear layer), on synthetic chat examples whose tokens are all
trained (one user word, a long assistant answer). Time: the Trainer's first callback to its last optimizer
step, with a device sync at both ends (model loading and TRL's dataset preparation fall outside). Tokens:
the real (unpadded) tokens of the steps timed. MFU: 4 x base params x tokens / time / dense bf16 peak (a
frozen base costs the forward pass and the activation gradients, 2 + 2 FLOPs per parameter and token; the
adapter's own FLOPs are under 1% at rank 16 and left out).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

# about 0.49B parameters: Qwen2.5-0.5B's layer shapes, a 32k vocabulary (untied)
FULL = {"hidden": 896, "layers": 24, "heads": 14, "kv": 2, "inter": 4864, "vocab": 32000, "seq": 1024}
SMOKE = {"hidden": 64, "layers": 2, "heads": 4, "kv": 2, "inter": 128, "vocab": 1000, "seq": 128}
WORDS = [f"w{i}" for i in range(20000)]


def build_model(dims: dict[str, int], target: Path) -> int:
    """A random Llama with a word-level tokenizer trained at run time and a chat template; returns params."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.WordLevel(unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(
        [" ".join(WORDS[: dims["vocab"] - len(specials)])],
        trainers.WordLevelTrainer(vocab_size=dims["vocab"], special_tokens=specials),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|> ' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }} <|end|>{% endgeneration %}"
        "{% else %}{{ m['content'] }} <|end|>{% endif %} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=dims["hidden"],
        intermediate_size=dims["inter"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["kv"],
        max_position_embeddings=dims["seq"] * 2,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(target))
    fast.save_pretrained(str(target))
    return sum(p.numel() for p in model.parameters())


def examples(n: int, seq: int, vocab: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    words = WORDS[: vocab - 10]
    return [
        {
            "messages": [
                {"role": "user", "content": rng.choice(words)},
                {"role": "assistant", "content": " ".join(rng.choices(words, k=seq - 12))},
            ]
        }
        for _ in range(n)
    ]


class _Timer:
    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    def callback(self) -> Any:
        import torch
        from transformers import TrainerCallback

        timer = self

        def sync() -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        class _Cb(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                sync()
                timer.start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.global_step >= state.max_steps:
                    sync()
                    timer.end = time.perf_counter()
                    timer.steps = int(state.global_step)

        return _Cb()


def one_row(
    model_dir: Path, work: Path, data: list[dict[str, Any]], quantization: str, dims: dict[str, int]
) -> dict[str, Any]:
    import torch

    from finetune_operator.api.engine_llm import LlmEngine
    from finetune_trainer.checkpoints import StopFlag
    from finetune_trainer.context import TrainContext
    from finetune_trainer.engine_llm import LlmRunner
    from finetune_trainer.llm_data import ChatData, sft_rows
    from finetune_trainer.progress import Reporter

    spec = LlmEngine(
        base_model=str(model_dir),
        quantization=quantization,  # type: ignore[arg-type]
        epochs=1,
        batch_size=8,
        max_seq_length=dims["seq"],
        precision="bf16" if torch.cuda.is_available() else "fp32",
        eval_generations=0,
    )
    chat = ChatData("chat", data)
    ctx = TrainContext[Any](
        train=chat,
        validation=ChatData("chat", data[:8]),
        work_dir=work,
        reporter=Reporter([], 60.0),
        stop=StopFlag(),
        checkpoint_steps=10**9,
    )
    runner = LlmRunner(ctx, spec)
    runner.prepare()
    timer = _Timer()
    orig = runner._trainer

    def with_timer(callback: Any) -> Any:
        trainer = orig(callback)
        trainer.add_callback(timer.callback())
        return trainer

    runner._trainer = with_timer  # type: ignore[method-assign]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    outcome = runner.train()
    rows = sft_rows(chat, runner.tokenizer, runner.template, dims["seq"])
    tokens = sum(len(r["input_ids"]) for r in rows[: timer.steps * spec.batch_size])
    seconds = (timer.end or 0.0) - (timer.start or 0.0)
    return {
        "quantization": quantization,
        "steps": outcome.steps,
        "loopSeconds": round(seconds, 3),
        "tokens": tokens,
        "tokensPerSecond": round(tokens / seconds, 1) if seconds > 0 else None,
        "trainLoss": outcome.train_loss,
        "peakGpuMemoryGiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
    }


def run_llm(smoke: bool, peak_bf16: float | None) -> dict[str, Any]:
    """Both rows (bf16 base, 4-bit base); a row that cannot run says why."""
    import torch

    dims = SMOKE if smoke else FULL
    work = Path(tempfile.mkdtemp(prefix="gpu-llm-"))
    params = build_model(dims, work / "model")
    data = examples(16 if smoke else 512, dims["seq"], dims["vocab"])
    doc: dict[str, Any] = {"model": {**dims, "params": params}, "examples": len(data), "rows": []}
    for quant in ("none", "4bit"):
        if quant == "4bit" and not torch.cuda.is_available():
            doc["rows"].append({"quantization": quant, "skipped": "4-bit needs CUDA (bitsandbytes)"})
            continue
        try:
            row = one_row(work / "model", work / f"run-{quant}", data, quant, dims)
        except Exception as exc:  # e.g. bitsandbytes missing in the GPU image
            row = {"quantization": quant, "error": f"{type(exc).__name__}: {exc}"[:500]}
        if row.get("tokensPerSecond") and peak_bf16:
            row["mfuPercent"] = round(4 * params * row["tokensPerSecond"] / peak_bf16 * 100, 2)
        doc["rows"].append(row)
    return doc
