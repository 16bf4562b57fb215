"""Adapter engine: a frozen model embeds each distinct text once; an adapter trains on query embeddings."""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from finetune_operator.api.finetunejob import AdapterEngine

from . import distributed as ddp
from .adapter import Adapter, build_adapter, load_reference_layout, save_adapter_model
from .checkpoints import (
    Interrupted,
    atomic_checkpoint,
    checkpoint_dir,
    latest_valid_checkpoint,
    rotate_checkpoints,
)
from .context import Eta, TrainContext, TrainOutcome
from .cpu import autocast, cpu_precision, use_pod_cores
from .metrics import Selection, eval_indices, retrieval_metrics
from .models import device, load_model

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def in_batch_loss(
    q: torch.Tensor, d: torch.Tensor, doc_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy over cosine similarities / temperature; the same doc elsewhere in the batch is not
    counted as a negative (no false in-batch negatives)."""
    logits = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / temperature
    same = doc_ids[:, None] == doc_ids[None, :]
    eye = torch.eye(len(doc_ids), dtype=torch.bool, device=q.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(doc_ids), device=q.device))


class AdapterRunner:
    model_format = "adapter"

    def __init__(self, ctx: TrainContext, spec: AdapterEngine, continue_from: Path | None = None) -> None:
        self.ctx, self.spec = ctx, spec
        self.base_model = spec.base_model
        self.continue_from = continue_from
        self.device = device()
        self.model: Any = None
        self.adapter: Adapter | None = None
        self.emb: torch.Tensor | None = None
        self.index: dict[str, int] = {}
        self.precision = "fp32"
        self.frozen_pass: dict[str, Any] = {}
        self.before: dict[str, Any] | None = None
        self._val: tuple[torch.Tensor, torch.Tensor, list[set[int]]] | None = None
        ev = spec.evaluation
        self.selection = Selection(ev.metric, ev.patience, ev.min_delta)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.eval_every = 1

    # ---------------------------------------------------------------- embeddings
    def _texts(self) -> tuple[list[str], list[str]]:
        """(training texts, evaluation-only texts), each distinct text once. Training needs the training
        queries and their relevant documents; the rest of the corpus and the validation queries are only
        embedded for evaluation."""
        tr, va = self.ctx.train, self.ctx.validation
        seen: dict[str, None] = {}
        for qid, query in tr.queries.items():
            seen.setdefault(query, None)
            for did in tr.relevant_docs.get(qid, []):
                if did in tr.corpus:
                    seen.setdefault(tr.corpus[did], None)
        training = list(seen)
        for ds in (tr, va):
            for t in ds.queries.values():
                seen.setdefault(t, None)
            for t in ds.corpus.values():
                seen.setdefault(t, None)
        return training, list(seen)[len(training) :]

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """The frozen model's embeddings (encode sorts texts by length, so batches carry little padding),
        under bf16 autocast where the CPU computes bf16 natively."""
        if not texts:
            return torch.empty(0, 0)
        with torch.inference_mode(), autocast(self.precision, self.device):
            out: torch.Tensor = (
                self.model.encode(texts, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
                .float()
                .cpu()
            )
        return out

    def prepare(self) -> None:
        ddp.init()  # torchrun: the frozen pass is sharded across the ranks (a no-op in one process)
        self.model = load_model(self.spec.base_model)
        if self.device == "cpu":
            cores = use_pod_cores()
            self.precision = cpu_precision()
            log.info("frozen pass on %d CPU thread(s), %s", cores, self.precision)
        training, evaluation = self._texts()
        texts = training + evaluation
        key = hashlib.sha256("\x00".join([self.spec.base_model, self.precision, *texts]).encode()).hexdigest()
        cache = self.ctx.work_dir / "cache" / "embeddings.pt"
        if cache.is_file() and ddp.is_main():
            try:
                saved = torch.load(cache, map_location="cpu", weights_only=True)
                if saved.get("key") == key:
                    self.emb = saved["emb"]
                    log.info("reusing %d cached embeddings from %s", len(texts), cache)
            except Exception:
                log.warning("embedding cache %s is unreadable; re-embedding", cache)
        if ddp.broadcast_object(self.emb is not None) and not ddp.is_main():
            return  # rank 0 has them cached; the adapter trains on rank 0
        if self.emb is None:
            # The frozen model's share of training: one pass over the distinct training texts, whatever the
            # number of epochs. Evaluation-only texts are embedded separately (and timed separately).
            t0 = time.monotonic()
            train_emb = ddp.sharded_encode(self._encode, training)
            took = time.monotonic() - t0
            log.info("embedded %d distinct training texts once in %.1fs", len(training), took)
            self.frozen_pass = {
                "texts": len(training),
                "seconds": round(took, 3),
                "textsPerSecond": round(len(training) / took, 2) if took > 0 else None,
                "precision": self.precision,
                "threads": torch.get_num_threads(),
            }
            t1 = time.monotonic()
            eval_emb = ddp.sharded_encode(self._encode, evaluation)
            log.info("embedded %d evaluation-only texts in %.1fs", len(evaluation), time.monotonic() - t1)
            self.emb = torch.cat([train_emb, eval_emb]) if len(evaluation) else train_emb
            if not ddp.is_main():
                return  # the embeddings are shared; training the small adapter stays on rank 0
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "emb": self.emb}, cache.with_suffix(".tmp"))
            cache.with_suffix(".tmp").replace(cache)
        self.index = {t: i for i, t in enumerate(texts)}
        dim = int(self.emb.shape[1])
        if self.spec.dim is not None and self.spec.dim != dim:
            raise ValueError(f"spec.engine.adapter.dim={self.spec.dim} but the model embeds to {dim}")
        if self.continue_from is not None:
            self.adapter = load_reference_layout(self.continue_from)
            log.info("continuing from the adapter in %s", self.continue_from)
        else:
            a = self.spec.adapter
            self.adapter = build_adapter(a.kind, dim, a.hidden_size, self.spec.bias, a.activation, a.residual)
        self.adapter.to(self.device)

    # ---------------------------------------------------------------- evaluation
    def _validation(self) -> tuple[torch.Tensor, torch.Tensor, list[set[int]]]:
        assert self.emb is not None
        if self._val is None:
            ds = self.ctx.validation
            qids, dids, relevant = eval_indices(ds)
            q = self.emb[[self.index[ds.queries[i]] for i in qids]]
            d = self.emb[[self.index[ds.corpus[i]] for i in dids]]
            self._val = (q, d, relevant)
        return self._val

    def evaluate(self, trained: bool) -> dict[str, Any]:
        assert self.adapter is not None
        q, d, relevant = self._validation()
        if trained:
            was = self.adapter.training
            self.adapter.eval()
            with torch.no_grad():
                q = self.adapter(q.to(self.device)).cpu()
            self.adapter.train(was)
        metrics = retrieval_metrics(q, d, relevant)
        if not trained:
            self.before = metrics
        return metrics

    # ---------------------------------------------------------------- training
    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.emb is not None
        ds = self.ctx.train
        pairs = ds.pairs(use_all_docs=True)
        doc_ids = {d: i for i, d in enumerate(ds.corpus)}
        qi = torch.tensor([self.index[ds.queries[q]] for q, _ in pairs])
        di = torch.tensor([self.index[ds.corpus[d]] for _, d in pairs])
        dd = torch.tensor([doc_ids[d] for _, d in pairs])
        return qi, di, dd

    def _order(self, epoch: int, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.ctx.seed + epoch))

    def _save(self, step: int, epoch: int, opt: Any, sched: Any, losses: list[tuple[int, float]]) -> Path:
        assert self.adapter is not None
        state = {
            "adapter": self.adapter.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "epoch": epoch,
            "losses": losses,
            "seed": self.ctx.seed,
            "selection": self.selection.state(),
            "best_adapter": self.best_state,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy": np.random.get_state(),
            },
            "data_order": {"kind": "randperm", "seed": self.ctx.seed, "per_epoch": "seed + epoch"},
        }
        # written to a staging dir, renamed to checkpoint-<step> once complete (a SIGKILL leaves no partial one)
        with atomic_checkpoint(self.ctx.checkpoint_root, step) as tmp:
            torch.save(state, tmp / STATE_FILE)
        path = checkpoint_dir(self.ctx.checkpoint_root, step)
        rotate_checkpoints(self.ctx.checkpoint_root, self.ctx.keep_checkpoints)
        return path

    def _evaluate_at(self, step: int) -> None:
        """Evaluate the adapter now; keep a copy of it when it is the best so far."""
        assert self.adapter is not None
        t0 = time.monotonic()
        metrics = self.evaluate(trained=True)
        self.selection.seconds += time.monotonic() - t0
        best = self.selection.record(step, metrics)
        if best:
            self.best_state = {k: v.detach().clone().cpu() for k, v in self.adapter.state_dict().items()}
        # A new best at INFO, the rest at DEBUG: tiny epochs evaluate often, and a log line per
        # evaluation would flood the pod's log (and block a reader that drains it late).
        log.log(logging.INFO if best else logging.DEBUG, "%s", self.selection.describe(step, metrics))

    def train(self) -> TrainOutcome:
        if not ddp.is_main():  # the other ranks shared the frozen pass only
            return TrainOutcome(steps=0, total_steps=0, train_loss=None, wall_seconds=0.0, samples=0)
        assert self.emb is not None and self.adapter is not None
        ctx, spec = self.ctx, self.spec
        ev = spec.evaluation
        torch.manual_seed(ctx.seed)
        random.seed(ctx.seed)
        qi, di, dd = self._pairs()
        n = len(qi)
        per_epoch = math.ceil(n / spec.batch_size)
        total = per_epoch * spec.epochs
        self.eval_every = ev.steps or per_epoch
        opt = torch.optim.AdamW(
            self.adapter.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, total)))
        step, losses, resumed = 0, [], None
        ckpt = latest_valid_checkpoint(ctx.checkpoint_root, (STATE_FILE,))
        if ckpt is not None:
            try:
                state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
                self.adapter.load_state_dict(state["adapter"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                torch.set_rng_state(state["rng"]["torch"])
                random.setstate(state["rng"]["python"])
                np.random.set_state(state["rng"]["numpy"])
                step, losses, resumed = int(state["step"]), list(state["losses"]), int(state["step"])
                if state.get("selection"):
                    self.selection.load(state["selection"])
                    self.best_state = state.get("best_adapter")
                log.info("resumed from checkpoint %s (step %d of %d)", ckpt, step, total)
            except Exception:
                log.warning("checkpoint %s failed to load; starting over", ckpt, exc_info=True)
        emb = self.emb.to(self.device)
        eta, t0, start, last_loss = Eta(step), time.monotonic(), step, None
        self.adapter.train()
        # The adapter's steps are tiny matmuls: on CPU, intra-op threads cost more in synchronisation than
        # they give, so the loop runs single-threaded (restored afterwards; the frozen model's pass used them).
        threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(1)
        try:
            if not self.selection.curve:
                self._evaluate_at(step)  # step 0: the adapter as initialised (the identity: the base model)
            step, last_loss = self._loop(step, total, per_epoch, n, emb, qi, di, dd, opt, sched, losses, eta)
        finally:
            torch.set_num_threads(threads)
        self.adapter.eval()
        stopped_early = step < total
        if ev.keep_best and self.best_state is not None and self.selection.best_step != step:
            self.adapter.load_state_dict(self.best_state)
            log.info("publishing the best adapter, from step %s", self.selection.best_step)
        done = step - start
        wall = time.monotonic() - t0
        return TrainOutcome(
            steps=step,
            total_steps=total,
            train_loss=last_loss,
            wall_seconds=wall,
            samples=min(n * spec.epochs, done * spec.batch_size),
            losses=losses,
            resumed_from=resumed,
            selection=self.selection.summary(stopped_early),
            extra={"frozenPass": self.frozen_pass} if self.frozen_pass else {},
        )

    def _loop(
        self,
        step: int,
        total: int,
        per_epoch: int,
        n: int,
        emb: torch.Tensor,
        qi: torch.Tensor,
        di: torch.Tensor,
        dd: torch.Tensor,
        opt: Any,
        sched: Any,
        losses: list[tuple[int, float]],
        eta: Eta,
    ) -> tuple[int, float | None]:
        assert self.adapter is not None
        ctx, spec = self.ctx, self.spec
        last_loss: float | None = None
        order_epoch, order = -1, torch.empty(0, dtype=torch.long)
        while step < total:
            epoch, b = divmod(step, per_epoch)
            if epoch != order_epoch:  # the same permutation for every step of an epoch (and on resume)
                order_epoch, order = epoch, self._order(epoch, n)
            idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            q = self.adapter(emb[qi[idx].to(self.device)])
            loss = in_batch_loss(q, emb[di[idx].to(self.device)], dd[idx].to(self.device), spec.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            step += 1
            last_loss = float(loss.item())
            losses.append((step, last_loss))
            if step % self.eval_every == 0 or step == total:
                self._evaluate_at(step)
            stop_early = self.selection.should_stop and step < total
            if step % ctx.checkpoint_steps == 0 or step == total or ctx.stop or stop_early:
                path = self._save(step, epoch, opt, sched, losses)
                ctx.checkpoint_saved(step, path, last_loss, f"checkpoints/{path.name}")
                ctx.reporter.report(self._progress(step, total, per_epoch, last_loss, eta), ctx.checkpoints)
                if ctx.stop and step < total:
                    raise Interrupted(step)
            else:
                ctx.reporter.report(self._progress(step, total, per_epoch, last_loss, eta))
            if stop_early:
                log.info(
                    "early stop at step %d: %d evaluations without improvement (best at step %s)",
                    step,
                    self.selection.since_best,
                    self.selection.best_step,
                )
                break
        return step, last_loss

    @staticmethod
    def _progress(step: int, total: int, per_epoch: int, loss: float | None, eta: Eta) -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": total,
            "epoch": round(step / per_epoch, 3),
            "loss": loss,
            "eta_seconds": eta(step, total),
            "stage": "train",
        }

    def save(self, path: Path) -> None:
        assert self.adapter is not None
        self.adapter.cpu()
        save_adapter_model(self.model, self.adapter, path)
