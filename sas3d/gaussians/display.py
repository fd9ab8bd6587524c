"""Pictures of a Gaussian scene: RGB / label / query renders as PNG, and the web viewer's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sas3d.gaussians.model import GaussianScene
from sas3d.gaussians.raster import composite, project_gaussians
from sas3d.gaussians.semantic import NO_PREDICTION
from sas3d.utils.atomic import atomic_path

NO_PREDICTION_COLOR = (0, 0, 0)


def render_rgb(gaussians: GaussianScene, camera: Any, background: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8 view-independent (DC) colour render over a grey-level ``background``."""
    image, trans, _ = composite(project_gaussians(gaussians, camera), gaussians.colors)
    return np.clip((image + background * trans[..., None]) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def label_image(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) label ids -> (H, W, 3) uint8 class colours (the palette of ``sas3d segment``), black for none/ignore."""
    from sas3d.query.export import label_palette

    pal = np.vstack([label_palette(num_classes), np.asarray([NO_PREDICTION_COLOR], np.uint8)])
    lab = np.asarray(labels, dtype=np.int64)
    return pal[np.where((lab >= 0) & (lab < num_classes), lab, num_classes)]


def heat_image(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) scores -> (H, W, 3) uint8 turbo heat-map over ``valid`` pixels (black elsewhere)."""
    from sas3d.query.export import similarity_colors

    out = np.zeros(values.shape + (3,), np.uint8)
    if valid.any():
        out[valid] = similarity_colors(values[valid])
    return out


def save_png(path: str | Path, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def viewer_data(gaussians: GaussianScene, features: Any = None, *, source: str | None = None, max_gaussians: int = 300_000,
                seed: int = 0) -> Any:
    """:class:`sas3d.query.viewer.ViewerData` for the splat viewer: centres, DC colours, optional ground
    truth and per-Gaussian features, and the covariances / opacities viser draws the splats with."""
    from sas3d.query.viewer import ViewerData

    keep = np.arange(gaussians.num_gaussians)
    if gaussians.num_gaussians > max_gaussians:
        keep = np.sort(np.random.default_rng(seed).choice(gaussians.num_gaussians, max_gaussians, replace=False))
    import torch

    idx = torch.from_numpy(keep)
    return ViewerData(
        name=gaussians.name, points=np.asarray(gaussians.means, np.float32)[keep], rgb=gaussians.colors_uint8[keep],
        labels=None if gaussians.labels is None else gaussians.labels[keep], label_set=gaussians.label_set or "scannet20",
        features=None if features is None else features.features[idx],
        seen=None if features is None else features.seen[idx].numpy(), feature_source=source,
        splats={"covariances": gaussians.covariances()[keep].astype(np.float32),
                "opacities": gaussians.opacities[keep].astype(np.float32)[:, None]},
    )


__all__ = ["NO_PREDICTION", "heat_image", "label_image", "render_rgb", "save_png", "viewer_data"]
