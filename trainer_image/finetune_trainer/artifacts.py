"""TensorBoard event logs and a PNG with the loss curve and the before/after metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRIC_KEYS = ("hitRateAt1", "hitRateAtK", "mrrAt10", "ndcgAt10")
# the llm engine's evaluation
LLM_METRIC_KEYS = ("loss", "perplexity", "preferenceAccuracy", "preferenceMargin")


def _present(keys: tuple[str, ...], before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [k for k in keys if k in before and k in after]


def curve_points(selection: dict[str, Any] | None) -> list[tuple[int, float]]:
    """(step, value) of the validation curve in a Selection summary."""
    if not selection:
        return []
    metric = str(selection.get("selectionMetric") or "mrrAt10")
    return [(int(p["step"]), float(p[metric])) for p in selection.get("validationCurve") or [] if metric in p]


def write_tensorboard(
    path: Path,
    losses: list[tuple[int, float]],
    before: dict[str, Any],
    after: dict[str, Any],
    selection: dict[str, Any] | None = None,
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(path))
    try:
        for step, loss in losses:
            writer.add_scalar("train/loss", loss, step)
        last = losses[-1][0] if losses else 0
        for key in _present((*METRIC_KEYS, *LLM_METRIC_KEYS), before, after):
            writer.add_scalar(f"eval/{key}", float(before[key]), 0)
            writer.add_scalar(f"eval/{key}", float(after[key]), last)
        metric = str((selection or {}).get("selectionMetric") or "mrrAt10")
        for step, value in curve_points(selection):
            writer.add_scalar(f"validation/{metric}", value, step)
    finally:
        writer.close()


def write_plot(
    path: Path,
    losses: list[tuple[int, float]],
    before: dict[str, Any],
    after: dict[str, Any],
    title: str,
    selection: dict[str, Any] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        ax1.plot([s for s, _ in losses], [v for _, v in losses], lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_title("Loss and validation")
    curve = curve_points(selection)
    if curve:
        metric = str((selection or {}).get("selectionMetric") or "mrrAt10")
        ax3 = ax1.twinx()
        ax3.plot([s for s, _ in curve], [v for _, v in curve], "o-", color="tab:orange", ms=3, label=metric)
        best = (selection or {}).get("bestStep")
        if best is not None:
            ax3.axvline(int(best), color="tab:green", ls="--", lw=1, label=f"best step {best}")
        ax3.set_ylabel(f"validation {metric}")
        ax3.legend(loc="upper right", fontsize=8)
    keys = _present(METRIC_KEYS, before, after)
    xs = range(len(keys))
    ax2.bar([x - 0.2 for x in xs], [before[k] for k in keys], width=0.4, label="before")
    ax2.bar([x + 0.2 for x in xs], [after[k] for k in keys], width=0.4, label="after")
    ax2.set_xticks(list(xs), [k.replace("hitRateAtK", f"hitRate@{before.get('k', 5)}") for k in keys])
    ax2.set_ylim(0, 1)
    ax2.legend()
    ax2.set_title("Validation retrieval")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
