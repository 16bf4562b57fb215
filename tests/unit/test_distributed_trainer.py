"""finetune_trainer.distributed on a real gloo process group over loopback (world size 2): the agreed stop,
the sharded frozen-model pass, rank 0's broadcast; and MultipleNegativesRankingLoss gathering across ranks
(negatives of the whole global batch, as one process with that batch gets)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from finetune_trainer import distributed as ddp
from finetune_trainer.distributed import exit_code, shard_bounds

pytestmark = [pytest.mark.unit, pytest.mark.timeout(180)]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _join(rank: int, port: int) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)


def _helpers(rank: int, port: int, out: Any) -> None:
    import torch

    _join(rank, port)
    texts = [f"t{i}" for i in range(7)]  # shards of 4 and 3 rows

    def encode(batch: list[str]) -> torch.Tensor:
        return torch.tensor([[float(t[1:]), float(rank)] for t in batch])

    emb = ddp.sharded_encode(encode, texts)
    result = {
        "stop": ddp.agree_stop(rank == 1),  # only rank 1 got the SIGTERM
        "no_stop": ddp.agree_stop(False),
        "emb": emb.tolist(),
        "broadcast": ddp.broadcast_object({"from": rank}),
        "main": ddp.is_main(),
    }
    out.put((rank, result))
    ddp.barrier()
    ddp.shutdown()


def _spawn(fn: Any) -> dict[int, Any]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(fn, args=(_port(), queue), nprocs=2, start_method="spawn")
    return dict(queue.get(timeout=60) for _ in range(2))


def test_agreed_stop_sharded_encode_and_broadcast_on_gloo() -> None:
    got = _spawn(_helpers)
    for rank in (0, 1):
        r = got[rank]
        assert r["stop"] is True and r["no_stop"] is False
        assert [row[0] for row in r["emb"]] == [float(i) for i in range(7)]  # whole set, in order
        assert [row[1] for row in r["emb"]] == [0.0] * 4 + [1.0] * 3  # each rank encoded its own shard
        assert r["broadcast"] == {"from": 0}
    assert got[0]["main"] and not got[1]["main"]


def _mnrl(rank: int, port: int, out: Any) -> None:
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    _join(rank, port)
    import torch.distributed as dist

    gen = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    mine = slice(rank * 8, rank * 8 + 8)
    losses = {}
    for kwargs in (ddp.st_loss_kwargs(), {}):
        loss = MultipleNegativesRankingLoss(torch.nn.Identity(), **kwargs)
        value = loss.compute_loss_from_embeddings([anchors[mine], positives[mine]], None).detach()
        dist.all_reduce(value)
        losses["gathered" if kwargs else "local"] = float(value) / 2
    full = MultipleNegativesRankingLoss(torch.nn.Identity()).compute_loss_from_embeddings(
        [anchors, positives], None
    )
    out.put((rank, {**losses, "full": float(full), "kwargs": ddp.st_loss_kwargs()}))
    ddp.shutdown()


@pytest.mark.slow
def test_mnrl_gathers_the_negatives_of_every_rank() -> None:
    got = _spawn(_mnrl)[0]
    assert got["kwargs"] == {"gather_across_devices": True}
    assert got["gathered"] == pytest.approx(got["full"], rel=1e-5)  # the global batch's loss
    assert abs(got["local"] - got["full"]) > 0.1  # without gathering: only 8 candidates per anchor


def test_shards_and_exit_codes() -> None:
    assert [shard_bounds(7, 3, i) for i in range(3)] == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(1, 2, 1) == (1, 1)
    assert exit_code([4, 4]) == 4 and exit_code([4, 3]) == 3 and exit_code([4, 1]) == 1
    assert exit_code([-9]) == 1
    # torchrun SIGTERMs a peer still tearing down after the checkpoint barrier: still resumable
    assert exit_code([4, -15]) == 4 and exit_code([-15, 4]) == 4
    assert exit_code([-15]) == 1 and exit_code([-15, -15]) == 1 and exit_code([4, -9]) == 1


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert ddp.is_main() and not ddp.launched() and ddp.st_loss_kwargs() == {}
    assert ddp.st_training_args() == {} and ddp.agree_stop(True) is True
    assert ddp.sharded_encode(len, ["a", "b"]) == 2
