"""Semantic views of a Gaussian scene: composite per-Gaussian class scores, decode, score.

Per Gaussian, the cosine similarity of its feature to each class prompt (K scores) plus a "has a
feature" indicator are alpha-composited into the view (:func:`sas3d.gaussians.raster.composite`).
Compositing is linear, so the composited scores equal the text similarities of the composited
(unit) features: this is Semantic Gaussians' "render features, then compare with text", computed
with K + 1 channels instead of C. A pixel gets the argmax class where at least half of its
blending weight comes from Gaussians that have a feature (``MIN_FEATURE_WEIGHT``), otherwise no
prediction (-1, scored as a miss of its ground-truth class, never dropped).

Ground truth: a frame's ``label_path`` (uint16 label-set ids, 255 = unknown: what
``sas3d render-views`` writes) or a folder of ScanNet ``label-filt`` PNGs (NYU40 ids, mapped to
ScanNet20); both are resized nearest to the rendered view when their size differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sas3d.errors import InputError
from sas3d.gaussians.model import GaussianScene
from sas3d.gaussians.raster import composite, project_gaussians
from sas3d.scene.types import IGNORE_LABEL, Frame

MIN_FEATURE_WEIGHT = 0.5  # share of a pixel's blending weight that must come from Gaussians with a feature
NO_PREDICTION = -1


def gaussian_scores(features: Any, seen: Any, class_text: torch.Tensor) -> np.ndarray:
    """(N, K + 1) float32: cosine similarity to each class row, then the seen indicator (unseen rows: 0)."""
    from sas3d.evaluate.predict import cosine_scores

    scores = cosine_scores(features, class_text).numpy()
    seen_np = np.asarray(seen.numpy() if isinstance(seen, torch.Tensor) else seen, dtype=bool)
    scores[~seen_np] = 0.0
    return np.concatenate([scores, seen_np[:, None].astype(np.float32)], axis=1).astype(np.float32)


def decode(image: np.ndarray) -> np.ndarray:
    """(H, W, K + 1) composited scores -> (H, W) int64 labels, NO_PREDICTION where the feature weight is low."""
    labels = image[..., :-1].argmax(axis=-1).astype(np.int64)
    labels[image[..., -1] < MIN_FEATURE_WEIGHT] = NO_PREDICTION
    return labels


def render_labels(gaussians: GaussianScene, frame: Any, scores: np.ndarray, backend: str = "cpu") -> np.ndarray:
    """(H, W) predicted label map of one view from per-Gaussian :func:`gaussian_scores`
    (``backend="gsplat"``: the optional, untested CUDA path of :mod:`sas3d.gaussians.gsplat_backend`)."""
    if backend == "gsplat":
        from sas3d.gaussians.gsplat_backend import render_gsplat

        return decode(render_gsplat(gaussians, frame, scores)[0])
    image, _, _ = composite(project_gaussians(gaussians, frame), scores)
    return decode(image)


def read_label_image(frame: Frame, label_dir: str | Path | None = None, nyu40: bool = False) -> np.ndarray:
    """(H, W) int64 ground truth of a frame at its (height, width); see the module docstring."""
    from PIL import Image

    from sas3d.text.labelsets import nyu40_to_scannet20

    path = Path(label_dir) / f"{frame.stem}.png" if label_dir is not None else frame.label_path
    if path is None:
        raise InputError(frame.color_path, "no ground-truth label image for this frame (label/<frame>.png, or pass a label folder)")
    try:
        with Image.open(path) as im:
            if im.size != (int(frame.width), int(frame.height)):
                im = im.resize((int(frame.width), int(frame.height)), Image.NEAREST)
            lab = np.asarray(im).astype(np.int64)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read label image ({exc})") from None
    if lab.ndim != 2:
        raise InputError(path, f"label image must be single-channel, got shape {lab.shape}")
    return nyu40_to_scannet20(lab) if nyu40 else lab


@dataclass
class ViewScores:
    """Confusion matrix over the scored views and its metrics (sas3d.evaluate.metrics conventions)."""

    confusion: np.ndarray  # (K, K + 1), last column = no prediction
    metrics: dict[str, Any]
    views: list[str]
    predicted_fraction: float  # share of labelled pixels that got a prediction


def score_views(gaussians: GaussianScene, frames: Sequence[Frame], scores: np.ndarray, num_classes: int, *,
                label_dir: str | Path | None = None, nyu40: bool = False, progress: bool = False,
                keep: dict[str, np.ndarray] | None = None, backend: str = "cpu") -> ViewScores:
    """Render every frame's label map and score it against its ground-truth label image (2D mIoU / mAcc).
    ``keep``: if given, filled with each view's predicted label map (frame stem -> (H, W))."""
    from tqdm.auto import tqdm

    from sas3d.evaluate.metrics import confusion_matrix, iou_acc

    conf = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for frame in tqdm(frames, desc=f"score {gaussians.name}", unit="view", disable=not progress):
        gt = read_label_image(frame, label_dir, nyu40)
        pred = render_labels(gaussians, frame, scores, backend)
        if keep is not None:
            keep[frame.stem] = pred
        try:
            conf += confusion_matrix(pred.reshape(-1), gt.reshape(-1), num_classes, IGNORE_LABEL)
        except ValueError as exc:
            raise InputError(frame.label_path if label_dir is None else Path(label_dir), str(exc)) from None
    labelled = conf.sum()
    return ViewScores(conf, iou_acc(conf), [f.stem for f in frames],
                      float(conf[:, :num_classes].sum() / labelled) if labelled else float("nan"))
