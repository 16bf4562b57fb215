"""TensorBoard event logs and a PNG with the loss curve and the before/after metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRIC_KEYS = ("hitRateAt1", "hitRateAtK", "mrrAt10", "ndcgAt10")


def write_tensorboard(
    path: Path, losses: list[tuple[int, float]], before: dict[str, Any], after: dict[str, Any]
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(path))
    try:
        for step, loss in losses:
            writer.add_scalar("train/loss", loss, step)
        last = losses[-1][0] if losses else 0
        for key in METRIC_KEYS:
            writer.add_scalar(f"eval/{key}", float(before[key]), 0)
            writer.add_scalar(f"eval/{key}", float(after[key]), last)
    finally:
        writer.close()


def write_plot(
    path: Path, losses: list[tuple[int, float]], before: dict[str, Any], after: dict[str, Any], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        ax1.plot([s for s, _ in losses], [v for _, v in losses], lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_title("Loss")
    xs = range(len(METRIC_KEYS))
    ax2.bar([x - 0.2 for x in xs], [before[k] for k in METRIC_KEYS], width=0.4, label="before")
    ax2.bar([x + 0.2 for x in xs], [after[k] for k in METRIC_KEYS], width=0.4, label="after")
    ax2.set_xticks(list(xs), [k.replace("hitRateAtK", f"hitRate@{before.get('k', 5)}") for k in METRIC_KEYS])
    ax2.set_ylim(0, 1)
    ax2.legend()
    ax2.set_title("Validation retrieval")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
