"""torch.distributed for the trainer: who this process is, one writer, a shared stop, sharded embedding.

The trainer is launched by torchrun (`python -m finetune_trainer.distributed <torchrun args> -m
finetune_trainer --config ...`), which sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT for each
worker; without torchrun every helper here is the single-process no-op. Backends: NCCL on CUDA, gloo on CPU.

- One writer: progress, status, evaluation, checkpoints (the HF Trainer saves on rank 0 itself), the model
  and the result come from global rank 0 only.
- Stop: a SIGTERM can reach any rank (kubelet -> torchrun -> its workers). `agree_stop` all-reduces the
  flag at each step end, so every rank stops at the same step; rank 0 saves one checkpoint, a barrier
  waits for it, and every rank exits 4.

`main` is torchrun itself (torch.distributed.run's parser and run), plus one thing torchrun does not do:
keep the workers' exit code. torchrun exits 1 whatever its workers returned, which would hide exit 3
(invalid: fail now) and exit 4 (checkpointed on SIGTERM: resume) from the Job's podFailurePolicy.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

EXIT_FAILED = 1


def rank() -> int:
    """Global rank of this process (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of trainer processes (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes (progress, status, checkpoints, model, result)."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return world_size() > 1


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def initialized() -> bool:
    if not launched():
        return False
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized())


def init() -> None:
    """Join the process group (the HF Trainer does this itself; the adapter engine calls it)."""
    if not launched() or initialized():
        return
    import torch

    dist = _dist()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo")
    log.info("joined the process group: rank %d of %d (%s)", rank(), world_size(), dist.get_backend())


def _device() -> Any:
    import torch

    dist = _dist()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree_stop(local: bool) -> bool:
    """True on every rank when any rank was told to stop (a SIGTERM reached one of them)."""
    if not initialized():
        return local
    import torch

    dist = _dist()
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def barrier() -> None:
    """Wait for every rank (e.g. for rank 0's checkpoint before all exit)."""
    if initialized():
        _dist().barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not initialized():
        return value
    box = [value]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def shard_bounds(n: int, ranks: int, index: int) -> tuple[int, int]:
    """[start, end) of shard `index` of n items split into `ranks` contiguous, near-equal shards."""
    base, extra = divmod(n, ranks)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def sharded_encode(encode: Callable[[list[str]], Any], texts: Sequence[str]) -> Any:
    """`encode(texts)` (an n x d float tensor) computed with each rank encoding one contiguous shard, then
    all-gathered, so every rank gets the whole result in the original order. Single process: encode(texts)."""
    if not initialized():
        return encode(list(texts))
    import torch

    dist = _dist()
    ranks, me = world_size(), rank()
    start, end = shard_bounds(len(texts), ranks, me)
    mine = encode(list(texts[start:end]))
    mine = mine if isinstance(mine, torch.Tensor) else torch.as_tensor(mine)
    width = int(mine.shape[1]) if mine.dim() == 2 and mine.shape[0] else 0
    dims = torch.tensor([width], device=_device())
    dist.all_reduce(dims, op=dist.ReduceOp.MAX)
    width = int(dims.item())
    rows = shard_bounds(len(texts), ranks, 0)[1]  # the largest shard
    padded = torch.zeros((rows, width), dtype=torch.float32, device=_device())
    if mine.shape[0]:
        padded[: mine.shape[0]] = mine.to(device=_device(), dtype=torch.float32)
    parts = [torch.empty_like(padded) for _ in range(ranks)]
    dist.all_gather(parts, padded)
    out = [
        parts[r][: shard_bounds(len(texts), ranks, r)[1] - shard_bounds(len(texts), ranks, r)[0]]
        for r in range(ranks)
    ]
    return torch.cat(out).cpu()


# ---------------------------------------------------------------------------- sentence-transformers


def st_loss_kwargs() -> dict[str, Any]:
    """(Cached)MultipleNegativesRankingLoss under DDP: gather every rank's embeddings (with gradients), so
    each anchor is scored against the positives of the whole global batch, as in one process."""
    return {"gather_across_devices": True} if launched() else {}


def st_training_args() -> dict[str, Any]:
    """Training arguments under DDP. `split_batches`: the dataloader (with the no-duplicates batch sampler)
    draws each global batch of batchSize pairs, free of duplicates as a whole, and accelerate hands each rank
    its slice, so steps, batches and the learning-rate schedule are those of one process at that batch
    size. `dataloader_drop_last`: the gathered slices must be of equal size, so an epoch's last partial
    batch is dropped."""
    if not launched():
        return {}
    return {
        "accelerator_config": {"split_batches": True},
        "dataloader_drop_last": True,
        "ddp_backend": "nccl" if _cuda() else "gloo",
    }


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def shutdown() -> None:
    if initialized():
        _dist().destroy_process_group()


# ---------------------------------------------------------------------------- the launcher


def exit_code(codes: Sequence[int]) -> int:
    """The pod's exit code from its failed workers': 3 (invalid) wins, then 4 when the stop was checkpointed,
    else 1 (a crash, a signal, a lost peer: the attempt failed).

    The stop was checkpointed when at least one worker exited 4 and every other failed worker exited 4 or
    was SIGTERMed. A worker exits 4 only after the barrier that follows rank 0's checkpoint, and torchrun
    SIGTERMs the remaining workers as soon as one exits non-zero, so a peer still tearing down after that
    barrier shows up as -SIGTERM; its stop was already agreed and checkpointed."""
    from finetune_operator.api.trainerconfig import EXIT_INTERRUPTED, EXIT_INVALID

    if EXIT_INVALID in codes:
        return EXIT_INVALID
    if EXIT_INTERRUPTED in codes and all(c in (EXIT_INTERRUPTED, -signal.SIGTERM) for c in codes):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """torchrun (torch.distributed.run) with the workers' exit code kept."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from finetune_operator.api.trainerconfig import EXIT_INTERRUPTED, EXIT_OK

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(list(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    try:
        run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        codes = [int(f.exitcode) for f in exc.failures.values()]
        code = exit_code(codes)
        log.warning("trainer workers failed with exit codes %s: exiting %d", codes, code)
        return code
    except SignalException as exc:
        # torchrun passed the signal on to the workers and waited for them (--shutdown-timeout): a SIGTERM
        # is the checkpoint-and-stop request, so the attempt is resumable
        log.warning("torchrun received signal %s: workers stopped", exc.sigval)
        return EXIT_INTERRUPTED if exc.sigval == signal.SIGTERM else EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
