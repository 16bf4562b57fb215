"""LoRA (QLoRA) finetune of a causal LLM with TRL's SFTTrainer (method sft) or DPOTrainer (method dpo) and a PEFT
LoraConfig; the loops are TRL's. Checkpoints are the Trainer's own (adapter, optimizer, scheduler, RNG state),
written atomically (checkpoints.AtomicCheckpointsMixin) and resumed from; SIGTERM saves one and stops (exit 4).

The model saved is the PEFT adapter directory (adapter_config.json, adapter_model.safetensors, the tokenizer
and its chat template); with `merge`, the adapter merged into the base weights goes to `merged/` as well."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from finetune_operator.api.engine_llm import LlmEngine

from .checkpoints import AtomicCheckpointsMixin
from .context import TrainContext, TrainOutcome
from .hf_progress import ProgressCallback, resume_point, train_to_end
from .llm_data import ChatData, preference_row, sft_rows, training_template
from .llm_eval import evaluate_llm

log = logging.getLogger(__name__)

REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "adapter_model.safetensors")
MERGED_DIR = "merged"


def precision_flags(precision: str, cuda: bool) -> dict[str, bool]:
    """Mixed precision: fp32 on CPU; on CUDA, `auto` is bf16 where supported, fp16 otherwise."""
    if not cuda or precision == "fp32":
        return {"bf16": False, "fp16": False}
    if precision in ("bf16", "fp16"):
        return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    import torch

    bf16 = bool(torch.cuda.is_bf16_supported())
    return {"bf16": bf16, "fp16": not bf16}


def lora_config(spec: LlmEngine) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=spec.lora.rank,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=list(spec.lora.target_modules) if spec.lora.target_modules else "all-linear",
        task_type=TaskType.CAUSAL_LM,
        bias="none",
    )


class LlmRunner:
    """The Engine protocol for spec.engine.llm."""

    def __init__(self, ctx: TrainContext[Any], spec: LlmEngine) -> None:
        self.ctx, self.spec = ctx, spec
        self.base_model = spec.base_model
        self.model_format = "hf-causal-lm" if spec.merge else "peft-lora"
        self.model_subdir = MERGED_DIR if spec.merge else ""
        self.train_data: ChatData = ctx.train
        self.val_data: ChatData = ctx.validation
        self.model: Any = None
        self.tokenizer: Any = None
        self.template: str | None = None
        self.cuda = False
        self.generations: dict[str, list[dict[str, str]]] = {}
        self.stopped = False

    @property
    def seed(self) -> int:
        return self.spec.seed if self.spec.seed is not None else self.ctx.seed

    # ------------------------------------------------------------------ load

    def _load_base(self, quantize: bool, device_map: Any = None) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"trust_remote_code": self.spec.trust_remote_code}
        flags = precision_flags(self.spec.precision, self.cuda)
        dtype = torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else torch.float32
        if quantize:
            from transformers import BitsAndBytesConfig

            bnb: Any = BitsAndBytesConfig
            kwargs["quantization_config"] = bnb(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            )
            kwargs["device_map"] = device_map or {"": 0}
        else:
            # mixed precision keeps fp32 master weights of the trained adapter; the frozen base may be half
            kwargs["dtype"] = dtype if self.cuda else torch.float32
            if device_map is not None:
                kwargs["device_map"] = device_map
        try:
            return AutoModelForCausalLM.from_pretrained(self.spec.base_model, **kwargs)
        except OSError as exc:
            from .data import DatasetError

            raise DatasetError(
                f"spec.engine.llm.baseModel: cannot load {self.spec.base_model}: {exc}"
            ) from exc

    def prepare(self) -> None:
        import torch
        from peft import get_peft_model
        from peft import prepare_model_for_kbit_training as prepare_kbit
        from transformers import AutoTokenizer, set_seed

        from .locations import ConfigError

        self.cuda = torch.cuda.is_available()
        quantize = self.spec.quantization == "4bit"
        if quantize and not self.cuda:
            raise ConfigError("spec.engine.llm.quantization: 4bit needs a CUDA GPU (bitsandbytes)")
        set_seed(self.seed)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.spec.base_model, trust_remote_code=self.spec.trust_remote_code
            )
        except OSError as exc:
            raise ConfigError(f"spec.engine.llm.baseModel: cannot load the tokenizer: {exc}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.template = training_template(self.tokenizer)
        # one process per GPU (torchrun sets LOCAL_RANK): each rank loads the model onto its own device
        device = {"": int(os.environ.get("LOCAL_RANK", "0"))} if self.cuda else None
        base = self._load_base(quantize, device_map=device)
        if quantize:
            kbit: Any = prepare_kbit
            base = kbit(base, use_gradient_checkpointing=self.spec.gradient_checkpointing)
        self.model = get_peft_model(base, lora_config(self.spec))
        trainable, total = self.model.get_nb_trainable_parameters()
        log.info(
            "LoRA adapter: %d trainable of %d parameters (%.3f%%)", trainable, total, 100 * trainable / total
        )

    # ------------------------------------------------------------------ evaluate

    def evaluate(self, trained: bool) -> dict[str, Any]:
        metrics, gens = evaluate_llm(
            self.model,
            self.tokenizer,
            self.val_data,
            self.template,
            self.spec.max_seq_length,
            max(1, min(self.spec.batch_size, 8)),
            self.spec.eval_generations,
            self.spec.max_new_tokens,
        )
        self.generations["after" if trained else "before"] = gens
        return metrics

    # ------------------------------------------------------------------ train

    def _common_args(self) -> dict[str, Any]:
        ctx, spec = self.ctx, self.spec
        flags = precision_flags(spec.precision, self.cuda)
        return {
            "output_dir": str(ctx.checkpoint_root),
            "num_train_epochs": spec.epochs,
            "per_device_train_batch_size": spec.batch_size,
            "gradient_accumulation_steps": spec.gradient_accumulation,
            "learning_rate": spec.learning_rate,
            "warmup_steps": min(spec.warmup_ratio, 0.999),  # a float in [0, 1) is a ratio of the steps
            "max_length": spec.max_seq_length,
            "gradient_checkpointing": spec.gradient_checkpointing,
            "save_strategy": "steps",
            "save_steps": ctx.checkpoint_steps,
            "save_total_limit": ctx.keep_checkpoints,
            "eval_strategy": "no",
            "logging_steps": 1,
            "seed": self.seed,
            "data_seed": self.seed,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": not self.cuda,
            "dataloader_num_workers": 0,
            "bf16": flags["bf16"],
            "fp16": flags["fp16"],
        }

    def _trainer(self, callback: ProgressCallback) -> Any:
        from datasets import Dataset

        spec = self.spec
        if spec.method == "dpo":
            from trl.trainer.dpo_config import DPOConfig
            from trl.trainer.dpo_trainer import DPOTrainer

            rows = [preference_row(ex) for ex in self.train_data.examples]
            cls: Any = type("AtomicDPOTrainer", (AtomicCheckpointsMixin, DPOTrainer), {})
            args: Any = DPOConfig(**self._common_args(), beta=spec.beta)
            train_ds = Dataset.from_list(rows)
        else:
            from trl.trainer.sft_config import SFTConfig
            from trl.trainer.sft_trainer import SFTTrainer

            rows_t = sft_rows(self.train_data, self.tokenizer, self.template, spec.max_seq_length)
            cls = type("AtomicSFTTrainer", (AtomicCheckpointsMixin, SFTTrainer), {})
            args = SFTConfig(**self._common_args(), packing=spec.packing)
            train_ds = Dataset.from_list(rows_t)
        self._examples = len(train_ds)
        return cls(
            model=self.model,
            args=args,
            train_dataset=train_ds,
            processing_class=self.tokenizer,
            callbacks=[callback],
        )

    def train(self) -> TrainOutcome:
        ctx, spec = self.ctx, self.spec
        resume, start = resume_point(ctx.checkpoint_root, REQUIRED)
        callback = ProgressCallback(self, start)
        trainer = self._trainer(callback)
        out, wall, step, total = train_to_end(trainer, resume, self)
        state = trainer.state
        per_step = spec.batch_size * spec.gradient_accumulation
        samples = min(max(0, step - start) * per_step, self._examples * spec.epochs)
        losses = [(int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h]
        train_loss = callback.loss if callback.loss is not None else float(out.training_loss)
        return TrainOutcome(
            steps=step,
            total_steps=total,
            train_loss=train_loss,
            wall_seconds=wall,
            samples=samples,
            losses=losses,
            resumed_from=start if resume else None,
            selection={"selectionMetric": "preferenceMargin" if spec.method == "dpo" else "loss"},
            extra={"evaluation": {"generations": self.generations}},
        )

    # ------------------------------------------------------------------ save

    def save(self, path: Path) -> None:
        """The adapter dir (with tokenizer and chat template); the merged model in path/merged with `merge`."""
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))
        if self.spec.merge:
            self.save_merged(path, path / MERGED_DIR)

    def save_merged(self, adapter_dir: Path, target: Path) -> None:
        """Merge the saved adapter into a fresh, unquantized copy of the base weights (on the CPU)."""
        from peft import PeftModel

        base = self._load_base(quantize=False, device_map="cpu")
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(str(target), safe_serialization=True)
        self.tokenizer.save_pretrained(str(target))
