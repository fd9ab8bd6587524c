"""Evaluation plots (matplotlib, Agg backend): per-class IoU / accuracy bars."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sas3d.utils.atomic import atomic_path


def plot_per_class(path: str | Path, classes: Sequence[str], iou: np.ndarray, acc: np.ndarray, present: np.ndarray, title: str) -> Path:
    """Horizontal bar chart of per-class IoU and accuracy (%); classes absent from the ground truth are greyed out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    y = np.arange(k)
    iou_pct = np.nan_to_num(np.asarray(iou, dtype=float)) * 100
    acc_pct = np.nan_to_num(np.asarray(acc, dtype=float)) * 100
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * k))
    ax.barh(y - 0.2, iou_pct, height=0.4, label="IoU", color="tab:blue")
    ax.barh(y + 0.2, acc_pct, height=0.4, label="Acc", color="tab:orange", alpha=0.8)
    ax.set_yticks(y, [c if p else f"{c} (absent)" for c, p in zip(classes, present)])
    for tick, p in zip(ax.get_yticklabels(), present):
        if not p:
            tick.set_color("grey")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
