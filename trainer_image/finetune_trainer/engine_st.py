"""Full finetune with SentenceTransformerTrainer: MNRL (or cached MNRL), no-duplicates batches, warmup,
periodic IR evaluation, mixed precision (bf16 on CPUs that compute it natively), checkpoints + resume +
SIGTERM save."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from finetune_operator.api.finetunejob import SentenceTransformersEngine

from . import distributed as ddp
from .checkpoints import AtomicCheckpointsMixin
from .context import TrainContext, TrainOutcome
from .cpu import cpu_precision
from .hf_progress import ProgressCallback, resume_point, train_to_end
from .metrics import evaluate_model
from .models import device, load_model
from .st_batches import length_grouped_sampler
from .st_recipe import attention_dropout, learning_rate, precision_flags, set_attention_dropout
from .st_selection import SelectionCallback, eval_interval, mine_negatives

log = logging.getLogger(__name__)

REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "modules.json")


CACHED_AUTO_BATCH = 1024  # on CUDA, MNRL batches this large switch to the cached (memory-flat) variant
GPU_MINI_BATCH = 256  # mini-batch of the auto-selected cached loss on CUDA
COMPILE_ENV = "FINETUNE_TORCH_COMPILE"  # "1": torch.compile the model on CUDA


LOADER_WORKERS_MIN_PAIRS = 20_000  # below this, loader worker processes cost more to start than they save
LOG_POINTS = 50  # on CUDA, about this many loss logs per run (each one is a device sync)
PRETOKENIZE_ENV = "FINETUNE_PRETOKENIZE"  # "0": tokenize in the loop (default collator); "1": pre-tokenize


def pretokenize_enabled(cuda: bool) -> bool:
    """Tokenize the whole training set once before the loop: by default on CUDA only (CPU keeps the in-loop
    collator); PRETOKENIZE_ENV "1" or "0" forces it on or off."""
    flag = os.environ.get(PRETOKENIZE_ENV, "")
    return flag == "1" or (cuda and flag != "0")


def gpu_args(cuda: bool, pairs: int = 0, steps: int = 0, pretokenized: bool = False) -> dict[str, Any]:
    """Training arguments that use a CUDA GPU well (CPU: unchanged defaults): TF32 matmuls, fused AdamW,
    no per-step device syncs (no NaN/Inf loss filter, the loss logged about LOG_POINTS times per run instead
    of every step), tokenization in persistent pinned-memory loader workers only for large sets that are not
    pre-tokenized (spawning workers costs seconds; padding cached ids costs about a millisecond a batch),
    optional torch.compile."""
    if not cuda:
        return {"dataloader_num_workers": 0, "logging_steps": 1}
    big = pairs >= LOADER_WORKERS_MIN_PAIRS and not pretokenized
    workers = min(4, os.cpu_count() or 1) if big else 0
    return {
        "tf32": True,
        "optim": "adamw_torch_fused",
        "logging_steps": max(1, steps // LOG_POINTS),
        "logging_nan_inf_filter": False,
        "dataloader_num_workers": workers,
        "dataloader_pin_memory": workers > 0,
        "dataloader_persistent_workers": workers > 0,
        "dataloader_prefetch_factor": 4 if workers > 0 else None,
        "torch_compile": os.environ.get(COMPILE_ENV, "") == "1",
    }


CPU_CACHED_AUTO_BATCH = 128  # on CPU (memory the pod requests, no GPU), batches this large go cached
SMALL_GPU_BYTES = 24 * 2**30  # a GPU with less memory than this is "small": cached from SMALL_GPU_BATCH
SMALL_GPU_BATCH = 256
SMALL_GPU_MINI_BATCH = 64


def choose_loss(spec: SentenceTransformersEngine, cuda: bool, gpu_bytes: int = 0) -> tuple[str, int]:
    """(loss name, mini-batch size). The cached loss (GradCache) gives the same gradients as MNRL for the
    same batch, so switching to it for a large batch on a small device keeps the user's batchSize semantics
    (all in-batch negatives) with the activation memory of one mini-batch: on CPU from
    CPU_CACHED_AUTO_BATCH, on a GPU under SMALL_GPU_BYTES from SMALL_GPU_BATCH, on any GPU from
    CACHED_AUTO_BATCH."""
    if spec.loss == "CachedMultipleNegativesRankingLoss":
        return spec.loss, spec.mini_batch_size
    if not cuda and spec.batch_size >= CPU_CACHED_AUTO_BATCH:
        return "CachedMultipleNegativesRankingLoss", spec.mini_batch_size
    if cuda and spec.batch_size >= CACHED_AUTO_BATCH:
        return "CachedMultipleNegativesRankingLoss", max(spec.mini_batch_size, GPU_MINI_BATCH)
    if cuda and 0 < gpu_bytes < SMALL_GPU_BYTES and spec.batch_size >= SMALL_GPU_BATCH:
        return "CachedMultipleNegativesRankingLoss", max(spec.mini_batch_size, SMALL_GPU_MINI_BATCH)
    return spec.loss, spec.mini_batch_size


PRETOKENIZE_CHUNK = 4096  # texts per preprocessing call while building the cache


class PretokenizedCollator:
    """The trainer's own collator run once over every distinct text of each column before training; each
    batch is then padded from the cached token ids (about a millisecond) instead of tokenizing its texts in
    the loop. The cache is built by calling the wrapped collator itself (one column at a time, chunks of
    PRETOKENIZE_CHUNK texts), so prompts, lower-casing, stripping and truncation are the model's own; a batch
    whose columns or texts are not the cached ones goes to the wrapped collator. `build` checks the padded
    output against the wrapped collator on sample batches and returns None when they differ (left padding,
    per-batch non-tensor values, a collator that depends on the column position...)."""

    def __init__(self, inner: Any, columns: list[str]) -> None:
        self.inner = inner
        self.columns = columns
        self.index: dict[str, dict[str, int]] = {c: {} for c in columns}
        self.keys: dict[str, list[str]] = {}
        self.flat: dict[tuple[str, str], Any] = {}  # (column, key) -> 1-D tensor of concatenated rows
        self.pad: dict[tuple[str, str], int] = {}
        self.const: dict[tuple[str, str], Any] = {}  # non-tensor outputs (the same for every batch)
        self.offsets: dict[str, Any] = {}
        self.lengths: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:  # valid_label_columns, preprocess_fn, ... of the wrapped one
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @classmethod
    def build(cls, inner: Any, dataset: Any, check_batch: int = 64) -> PretokenizedCollator | None:
        import torch

        columns = list(dataset.column_names)
        if len(dataset) == 0:
            return None
        self = cls(inner, columns)
        for col in columns:
            texts = list(dict.fromkeys(dataset[col]))
            if not all(isinstance(t, str) for t in texts):
                return None
            rows: dict[str, list[Any]] = {}
            lengths: list[Any] = []
            for i in range(0, len(texts), PRETOKENIZE_CHUNK):
                chunk = texts[i : i + PRETOKENIZE_CHUNK]
                out = inner([{col: t} for t in chunk])
                mask = out.get(f"{col}_attention_mask")
                if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                    return None
                n = mask.sum(dim=1)
                lengths.append(n)
                for name, value in out.items():
                    key = name[len(col) + 1 :]
                    if not isinstance(value, torch.Tensor):
                        if self.const.setdefault((col, key), value) != value:
                            return None
                        continue
                    if value.dim() != 2 or value.shape != mask.shape:
                        return None
                    short = n < value.shape[1]
                    if bool(short.any()):
                        r = int(short.nonzero()[0, 0])
                        self.pad.setdefault((col, key), int(value[r, int(n[r])]))
                    rows.setdefault(key, []).extend(value[j, : int(n[j])] for j in range(len(chunk)))
                if col not in self.keys:
                    self.keys[col] = [name[len(col) + 1 :] for name in out]
            self.index[col] = {t: i for i, t in enumerate(texts)}
            lens = torch.cat(lengths)
            self.lengths[col] = lens
            self.offsets[col] = torch.cumsum(lens, 0) - lens
            for key, parts in rows.items():
                self.flat[(col, key)] = torch.cat(parts)
        n_rows = len(dataset)
        picks = [list(range(min(check_batch, n_rows)))]
        picks.append(sorted(torch.randperm(n_rows, generator=torch.Generator().manual_seed(0))[:check_batch]))
        for pick in picks:
            features = dataset.__getitems__([int(i) for i in pick])
            if not _same_batch(inner(features), self(features)):
                log.warning("pre-tokenized batches differ from the collator's: tokenizing in the loop")
                return None
        return self

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not features or list(features[0]) != self.columns:
            return dict(self.inner(features))
        batch: dict[str, Any] = {}
        for col in self.columns:
            index = self.index[col]
            try:
                rows = torch.tensor([index[f[col]] for f in features], dtype=torch.long)
            except KeyError:
                return dict(self.inner(features))
            lens = self.lengths[col][rows]
            width = int(lens.max())
            pos = torch.arange(width)
            valid = pos[None, :] < lens[:, None]
            gather = (self.offsets[col][rows][:, None] + pos[None, :]).clamp_(
                max=int(self.lengths[col].sum()) - 1
            )
            for key in self.keys[col]:
                if (col, key) in self.const:
                    batch[f"{col}_{key}"] = self.const[(col, key)]
                    continue
                values = self.flat[(col, key)][gather]
                batch[f"{col}_{key}"] = torch.where(valid, values, self.pad.get((col, key), 0))
        return batch


def _same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    if list(a) != list(b):
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, torch.Tensor):
            if not isinstance(vb, torch.Tensor) or va.dtype != vb.dtype or not torch.equal(va, vb):
                return False
        elif va != vb:
            return False
    return True


class _Callback(ProgressCallback):
    """The shared Trainer callback; the loss curve is kept on the runner (runner.losses)."""

    runner: SentenceTransformersRunner

    def logged_loss(self, step: int, loss: float) -> None:
        self.runner.losses.append((step, loss))


class SentenceTransformersRunner:
    model_format = "sentence-transformers"

    def __init__(self, ctx: TrainContext, spec: SentenceTransformersEngine) -> None:
        self.ctx, self.spec = ctx, spec
        self.base_model = spec.model
        self.model: Any = None
        self.losses: list[tuple[int, float]] = []
        self.stopped = False  # set by the callback when a stop was agreed (on every rank)
        self.before: dict[str, Any] | None = None  # the base model's validation metrics (step 0)

    def prepare(self) -> None:
        if device() == "cpu":
            from .cpu import use_pod_cores

            use_pod_cores()
        self.model = load_model(self.spec.model, self.spec.trust_remote_code, self.spec.max_seq_length)

    def evaluate(self, trained: bool) -> dict[str, Any]:
        metrics = evaluate_model(self.model, self.ctx.validation)
        if not trained:
            self.before = metrics
        return metrics

    def _datasets(self) -> Any:
        from datasets import Dataset

        ds = self.ctx.train
        pairs = ds.pairs(use_all_docs=self.spec.use_all_docs)
        data = Dataset.from_dict(
            {"anchor": [ds.queries[q] for q, _ in pairs], "positive": [ds.corpus[d] for _, d in pairs]}
        )
        hard = self.spec.hard_negatives
        if hard.count > 0:  # mined with the base model, before any training step
            mined = mine_negatives(data, self.model, list(ds.corpus.values()), hard)
            log.info("hard negatives: %d of %d pairs got %d each", len(mined), len(data), hard.count)
            data = mined if len(mined) else data
        return data

    def _evaluator(self) -> Any:
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

        va = self.ctx.validation
        return InformationRetrievalEvaluator(
            queries=dict[str, Any](va.queries),
            corpus=dict[str, Any](va.corpus),
            relevant_docs={q: set(d) for q, d in va.relevant_docs.items()},
            name="val",
            accuracy_at_k=[1, 5],
            precision_recall_at_k=[5],
            mrr_at_k=[10],
            ndcg_at_k=[10],
            map_at_k=[10],
            batch_size=64,
            show_progress_bar=False,
        )

    @staticmethod
    def _pretokenized(collator: Any, train_ds: Any) -> Any:
        """The trainer's collator with the whole set tokenized once (the fast tokenizer's threads allowed
        for this one pass: no loader workers are forked after it), or the collator itself if that fails."""
        t0 = time.monotonic()
        previous = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        try:
            built = PretokenizedCollator.build(collator, train_ds)
        finally:
            if previous is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = previous
        log.info(
            "pre-tokenized %d pairs in %.2fs: %s", len(train_ds), time.monotonic() - t0, built is not None
        )
        return built if built is not None else collator

    def train(self) -> TrainOutcome:
        import torch
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers

        ctx, spec = self.ctx, self.spec
        train_ds = self._datasets()
        cuda = torch.cuda.is_available()
        gpu_bytes = int(torch.cuda.get_device_properties(0).total_memory) if cuda else 0
        loss_name, mini_batch = choose_loss(spec, cuda, gpu_bytes)
        log.info("loss %s (mini-batch %d) for batch %d", loss_name, mini_batch, spec.batch_size)
        if loss_name == "CachedMultipleNegativesRankingLoss":
            loss: Any = losses.CachedMultipleNegativesRankingLoss(
                self.model, mini_batch_size=mini_batch, **ddp.st_loss_kwargs()
            )
        else:
            # under DDP every rank scores its anchors against the positives of all ranks: the global batch
            loss = losses.MultipleNegativesRankingLoss(self.model, **ddp.st_loss_kwargs())
        evaluate = False  # validation runs in the SelectionCallback (rank 0), not in the library's loop
        dropout = attention_dropout(spec.attention_dropout, cuda)
        if dropout is not None:
            n = set_attention_dropout(self.model, dropout)
            log.info("attention dropout %s on %d self-attention modules", dropout, n)
        params = sum(p.numel() for p in self.model.parameters())
        flags = precision_flags(spec.precision, cuda, params, cpu_bf16=not cuda and cpu_precision() == "bf16")
        precision = "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "fp32"
        lr = learning_rate(spec.learning_rate, params)
        log.info("training precision %s, learning rate %g (%d parameters)", precision, lr, params)
        pretokenize = pretokenize_enabled(cuda)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            if any(p.dtype != torch.float32 for p in self.model.parameters()):
                self.model.float()  # mixed precision keeps fp32 master weights (half checkpoints load as half)
        args = SentenceTransformerTrainingArguments(
            output_dir=str(ctx.checkpoint_root),
            num_train_epochs=spec.epochs,
            per_device_train_batch_size=spec.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=lr,
            warmup_ratio=spec.warmup_ratio,
            batch_sampler=length_grouped_sampler if spec.group_by_length else BatchSamplers.NO_DUPLICATES,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=spec.evaluation_steps if evaluate else None,
            save_strategy="steps",
            save_steps=ctx.checkpoint_steps,
            save_total_limit=ctx.keep_checkpoints,
            seed=ctx.seed,
            data_seed=ctx.seed,
            report_to="none",
            disable_tqdm=True,
            use_cpu=not cuda,
            **gpu_args(cuda, len(train_ds), spec.epochs * -(-len(train_ds) // spec.batch_size), pretokenize),
            bf16=flags["bf16"],
            fp16=flags["fp16"],
            **ddp.st_training_args(),
        )
        resume, start = resume_point(ctx.checkpoint_root, REQUIRED)
        callback = _Callback(self, start)
        ev = spec.evaluation
        per_epoch = -(-len(train_ds) // spec.batch_size)
        selector = SelectionCallback(
            self.model,
            ctx.validation,
            ev,
            eval_interval(ev.steps, spec.evaluation_steps, per_epoch),
            ctx.work_dir,
        )
        selector.start(self.before, start if resume else None)
        # the Trainer's own checkpointing, each checkpoint written to a staging dir and renamed once complete
        trainer_cls = type("AtomicTrainer", (AtomicCheckpointsMixin, SentenceTransformerTrainer), {})
        trainer = trainer_cls(
            model=self.model,
            args=args,
            train_dataset=train_ds,
            loss=loss,
            evaluator=self._evaluator() if evaluate else None,  # under DDP: on rank 0 (the library's own)
            callbacks=[callback, selector],
        )
        if pretokenize:
            trainer.data_collator = self._pretokenized(trainer.data_collator, train_ds)
        out, wall, step, total = train_to_end(trainer, resume, self)
        state = trainer.state
        samples = max(0, step - start) * spec.batch_size
        samples = min(samples, len(train_ds) * spec.epochs)
        self.losses = [(int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h]
        train_loss = callback.loss if callback.loss is not None else float(out.training_loss)
        if ev.keep_best and ddp.is_main():
            self.model = selector.restore_best(
                step, lambda: load_model(spec.model, spec.trust_remote_code, spec.max_seq_length)
            )
        return TrainOutcome(
            steps=step,
            total_steps=total,
            train_loss=train_loss,
            wall_seconds=wall,
            samples=samples,
            losses=list(self.losses),
            resumed_from=start if resume else None,
            selection=selector.selection.summary(selector.stopped_early),
        )

    def save(self, path: Path) -> None:
        self.model.save(str(path))
