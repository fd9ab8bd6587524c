"""Export query results as PLY files MeshLab / CloudCompare open directly.

* heat map: vertex colours from a matplotlib colormap over min-max scaled similarity, plus the raw
  value as a float vertex property ``similarity``;
* label map: vertex property ``label`` (ushort class index, :data:`NO_LABEL` = no prediction), colours
  from a fixed palette, and a JSON legend next to the PLY.

Mesh faces of the scene are kept, so a mesh scan stays a mesh.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sas3d.scene.types import Scene
from sas3d.utils.atomic import write_json_atomic

NO_LABEL = 65535  # ushort written for points without a prediction
NO_LABEL_COLOR = (128, 128, 128)


def similarity_colors(similarity: Any, cmap: str = "turbo") -> np.ndarray:
    """(N, 3) uint8 colours: ``similarity`` min-max scaled to [0, 1] through a matplotlib colormap.

    A constant input maps to the middle of the colormap.
    """
    import matplotlib

    s = np.asarray(similarity, dtype=np.float64).reshape(-1)
    lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 0.0)
    t = (s - lo) / (hi - lo) if hi > lo else np.full_like(s, 0.5)
    rgba = matplotlib.colormaps[cmap](t)
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def label_palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 fixed palette: matplotlib tab20 for the first 20 classes, then golden-angle hues."""
    import matplotlib

    tab = np.round(np.asarray(matplotlib.colormaps["tab20"].colors)[:, :3] * 255).astype(np.uint8)
    cols = [tab[i] for i in range(min(num_classes, len(tab)))]
    for i in range(len(cols), num_classes):
        h = (i * 0.618033988749895) % 1.0
        v = 0.95 if i % 2 else 0.7
        cols.append(np.round(np.array(colorsys.hsv_to_rgb(h, 0.75, v)) * 255).astype(np.uint8))
    return np.asarray(cols, dtype=np.uint8).reshape(num_classes, 3)


def _write_ply(path: Path, points: np.ndarray, colors: np.ndarray, faces: np.ndarray | None, vertex_props: dict[str, np.ndarray]) -> None:
    from sas3d.scene.ply import write_ply

    write_ply(path, points, colors=colors, faces=faces, vertex_props=vertex_props)


def write_heatmap_ply(path: str | Path, scene: Scene, similarity: Any, cmap: str = "turbo") -> np.ndarray:
    """Write the scene coloured by ``similarity`` (N,), with a float ``similarity`` vertex property. Returns the colours."""
    sim = np.asarray(similarity, dtype=np.float32).reshape(-1)
    if sim.shape[0] != scene.num_points:
        raise ValueError(f"{sim.shape[0]} similarity values for {scene.num_points} points")
    colors = similarity_colors(sim, cmap)
    _write_ply(Path(path), scene.points, colors, scene.faces, {"similarity": sim})
    return colors


def write_label_ply(path: str | Path, scene: Scene, labels: Any, class_names: Sequence[str], extra_legend: dict | None = None) -> Path:
    """Write a label PLY (``label`` ushort + palette colours) and ``<path>.legend.json``; returns the legend path.

    ``labels`` (N,) are class indices into ``class_names``, negative = no prediction (-> :data:`NO_LABEL`).
    """
    path = Path(path)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if lab.shape[0] != scene.num_points:
        raise ValueError(f"{lab.shape[0]} labels for {scene.num_points} points")
    k = len(class_names)
    if k >= NO_LABEL or (lab >= k).any():
        raise ValueError(f"labels must lie in [0, {k}) or be negative")
    palette = label_palette(k)
    none = lab < 0
    colors = np.where(none[:, None], np.array(NO_LABEL_COLOR, dtype=np.uint8), palette[np.clip(lab, 0, None)]).astype(np.uint8)
    ushort = np.where(none, NO_LABEL, lab).astype(np.uint16)
    _write_ply(path, scene.points, colors, scene.faces, {"label": ushort})
    counts = np.bincount(lab[~none], minlength=k)
    legend = {
        "ply": path.name,
        "scene": scene.name,
        "label_property": "label",
        "no_prediction_label": NO_LABEL,
        "no_prediction_points": int(none.sum()),
        "classes": [
            {"index": i, "name": n, "color": palette[i].tolist(), "points": int(counts[i])} for i, n in enumerate(class_names)
        ],
        **(extra_legend or {}),
    }
    write_json_atomic(legend_path(path), legend)
    return legend_path(path)


def legend_path(ply: str | Path) -> Path:
    """``<name>.legend.json`` next to a label PLY."""
    return Path(ply).with_suffix(".legend.json")
