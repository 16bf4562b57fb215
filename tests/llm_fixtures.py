"""A tiny random LlamaForCausalLM (2 layers, hidden size 32) with a byte-level BPE tokenizer trained at test
time and a chat template with generation markers. Nothing is downloaded; built once per test session."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SFT_EXAMPLE = REPO / "examples" / "llm"
SPECIALS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>"]
# Assistant turns inside {% generation %}: TRL's assistant_only_loss and tokenizer masks use the markers.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _corpus() -> list[str]:
    texts: list[str] = []
    for path in sorted(SFT_EXAMPLE.rglob("*.yaml")):
        texts.append(path.read_text(encoding="utf-8"))
    texts.append('The quick brown fox jumps over the lazy dog. 0123456789 {}[]":,')
    return texts


def build_tiny_llama(target: Path, hidden: int = 32, layers: int = 2, vocab: int = 512) -> Path:
    """Save a random tiny Llama and its tokenizer (with chat template) to target."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>", unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    fast.save_pretrained(str(target))
    (target / "tiny-llama.json").write_text(json.dumps({"hidden": hidden, "layers": layers}))
    return target


_CACHE: Path | None = None


def tiny_llama() -> Path:
    """The session's tiny Llama (built on first use, in a temp dir removed at interpreter exit)."""
    global _CACHE
    if _CACHE is None or not (_CACHE / "config.json").is_file():
        root = Path(tempfile.mkdtemp(prefix="tiny-llama-"))
        import atexit

        atexit.register(shutil.rmtree, root, True)
        _CACHE = build_tiny_llama(root / "model")
    return _CACHE


def copy_tiny_llama(target: Path) -> Path:
    """A copy of the session's tiny Llama at target (e.g. on a local runner's PVC)."""
    shutil.copytree(tiny_llama(), target, dirs_exist_ok=True)
    return target


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def example_data(kind: str = "sft") -> dict[str, str]:
    """The train.jsonl / val.jsonl of examples/llm (sft) or examples/llm/dpo (dpo)."""
    import yaml

    path = SFT_EXAMPLE / ("dataset.yaml" if kind == "sft" else "dpo/dataset.yaml")
    data: dict[str, str] = yaml.safe_load(path.read_text(encoding="utf-8"))["data"]
    return data


def trainer_config(tmp: Path, model: Path, method: str = "sft", **engine: object) -> Path:
    """A TrainerConfig JSON for `python -m finetune_trainer --config`, on the example data; returns its path."""
    data = example_data(method)
    (tmp / "train.jsonl").write_text(data["train.jsonl"], encoding="utf-8")
    (tmp / "val.jsonl").write_text(data["val.jsonl"], encoding="utf-8")
    llm = {"baseModel": str(model), "method": method, "epochs": 2, "batchSize": 4, "learningRate": 0.01}
    llm.update(engine)  # type: ignore[arg-type]
    cfg = {
        "job": {"namespace": "default", "name": "tiny-llm"},
        "spec": {
            "engine": {"llm": llm},
            "dataset": {"train": {"configMap": {"name": "d", "key": "train.jsonl"}}},
            "output": {"storageUri": "pvc://out/x"},
            "placement": {"resources": {"gpu": {"count": 0}}},
        },
        "train": str(tmp / "train.jsonl"),
        "validation": str(tmp / "val.jsonl"),
        "outputDir": str(tmp / "out"),
        "outputUri": "pvc://out/x/default/tiny-llm",
        "checkpointSteps": 3,
        "keepCheckpoints": 10,
        "resultPath": str(tmp / "termination-log"),
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path
