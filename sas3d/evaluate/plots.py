"""Evaluation plots (matplotlib, Agg backend): per-class bars (IoU / accuracy, instance AP)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sas3d.utils.atomic import atomic_path

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def plot_per_class(path: str | Path, classes: Sequence[str], iou: np.ndarray, acc: np.ndarray, present: np.ndarray, title: str) -> Path:
    """Horizontal bar chart of per-class IoU and accuracy (%); classes absent from the ground truth are greyed out."""
    return plot_class_bars(path, classes, {"IoU": iou, "Acc": acc}, present, title)


def plot_class_bars(path: str | Path, classes: Sequence[str], series: Mapping[str, np.ndarray], present: np.ndarray, title: str) -> Path:
    """Horizontal bars of one or more per-class fractions (shown as %), one colour per series; absent classes greyed out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    y = np.arange(k)
    height = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * k))
    for s, (name, values) in enumerate(series.items()):
        pct = np.nan_to_num(np.asarray(values, dtype=float)) * 100
        offset = (s - (len(series) - 1) / 2) * height
        ax.barh(y + offset, pct, height=height, label=name, color=COLORS[s % len(COLORS)], alpha=1.0 if s == 0 else 0.8)
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
