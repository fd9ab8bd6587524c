"""Read the files released with OpenScene and SAS without executing pickled code.

Fused 2D features (``<scene>[_<n>].pt``), written by OpenScene's ``save_fused_feature``:

* current format ``{"feat": (M, C) fp16, "mask_full": (N,) bool}``: ``feat`` holds one row per True
  entry of ``mask_full`` in point order (``M == mask_full.sum()``). ``mask_full`` is "seen by a camera"
  (validation files) or "seen and in this random training chunk" (training files, 5 per scene);
  either way the other points have no feature, so ``seen = mask_full``.
* legacy format ``{"feat", "mask", "mask_full"}``: ``feat`` again has one row per True entry of
  ``mask_full`` (the chunk), and ``mask`` (bool over those rows, or indices into them) marks the rows
  that actually received a 2D feature. ``seen`` = chunk points whose row is in ``mask``.
* ``feat`` may carry a trailing singleton axis (OpenScene drops ``[..., 0]``).

Preprocessed 3D scenes (``<scene>.pth``, OpenScene ``preprocess_3d_*``): a tuple ``(coords (N,3),
colors (N,3) in [-1, 1] or the scalar 0 for lidar, labels (N,))`` of numpy arrays, labels 255 (or
-100 in old files) = ignore.

Loading uses ``torch.load(weights_only=True)``, which refuses every global except tensors and
containers; we additionally allow only numpy's array-rebuild function, ``ndarray`` and the numeric
``dtype`` classes (data, no code), so object arrays and custom classes are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sas3d.errors import InputError
from sas3d.fusion.features import PointFeatures
from sas3d.scene.types import IGNORE_LABEL, Scene
from sas3d.utils.torch_io import safe_torch_load  # noqa: F401  (also imported from here by tests)


def _tensor(path: Path, obj: Any, what: str) -> torch.Tensor:
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        return obj
    raise InputError(path, f"'{what}' is a {type(obj).__name__}, expected a tensor or array")


def load_reference_fused(path: str | Path, num_points: int | None = None) -> PointFeatures:
    """Read an OpenScene/SAS fused-feature ``.pt`` into :class:`PointFeatures` (fp16, zeros where unseen).

    ``num_points`` is the scene's point count; it must equal ``len(mask_full)`` (checked, since a
    mismatch means the file belongs to another scene or preprocessing).
    """
    path = Path(path)
    data = safe_torch_load(path)
    if not isinstance(data, dict) or "feat" not in data or "mask_full" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(path, f"not an OpenScene fused-feature file: expected a dict with 'feat' and 'mask_full', got {keys}")
    feat = _tensor(path, data["feat"], "feat")
    if feat.ndim == 3 and feat.shape[-1] == 1:
        feat = feat[..., 0]
    mask_full = _tensor(path, data["mask_full"], "mask_full").reshape(-1).bool()
    if feat.ndim != 2:
        raise InputError(path, f"'feat' has shape {tuple(feat.shape)}, expected (M, C)")
    n = int(mask_full.shape[0])
    if num_points is not None and n != int(num_points):
        raise InputError(path, f"'mask_full' covers {n} points but the scene has {num_points}")
    rows = int(mask_full.sum())
    if feat.shape[0] != rows:
        raise InputError(path, f"'feat' has {feat.shape[0]} rows but 'mask_full' marks {rows} points")
    row_has_feature = torch.ones(rows, dtype=torch.bool)
    legacy = "mask" in data
    if legacy:
        m = _tensor(path, data["mask"], "mask").reshape(-1)
        row_has_feature = torch.zeros(rows, dtype=torch.bool)
        try:
            row_has_feature[m.bool() if m.dtype == torch.bool else m.long()] = True
        except (IndexError, RuntimeError) as exc:
            raise InputError(path, f"legacy 'mask' does not index the {rows} feature rows ({exc})") from None
    seen = torch.zeros(n, dtype=torch.bool)
    seen[torch.nonzero(mask_full).reshape(-1)[row_has_feature]] = True
    features = torch.zeros(n, feat.shape[1], dtype=torch.float16)
    features[mask_full] = feat.to(torch.float16) * row_has_feature[:, None]
    meta = {
        "source": str(path),
        "format": "openscene-legacy" if legacy else "openscene",
        "note": "converted from a reference release (feat/mask_full)",
    }
    return PointFeatures(features, seen, meta)


def convert_reference_fused(src: str | Path, num_points: int | None, out: str | Path) -> PointFeatures:
    """Convert a reference ``.pt`` fused file to our safetensors PointFeatures file (atomic write)."""
    pf = load_reference_fused(src, num_points)
    pf.save(out)
    return pf


def load_reference_scene(path: str | Path, label_set: str | None = "scannet20", name: str | None = None) -> Scene:
    """Read an OpenScene preprocessed ``.pth`` ``(coords, colors, labels)`` as a :class:`Scene` (kind "openscene").

    Colours in [-1, 1] become uint8; lidar files store the scalar 0 instead of colours (-> no colours).
    Labels -100 (old files) and 255 are ignore; ``label_set`` names the label set the ids belong to
    (OpenScene: scannet20 for ScanNet, matterport21/40/80/160, nuscenes16).
    """
    path = Path(path)
    data = safe_torch_load(path)
    if not isinstance(data, (tuple, list)) or len(data) < 1:
        raise InputError(path, f"not an OpenScene 3D scene file: expected a (coords, colors, labels) tuple, got {type(data).__name__}")
    coords = _tensor(path, data[0], "coords").numpy()
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise InputError(path, f"coords have shape {coords.shape}, expected (N, 3)")
    n = coords.shape[0]
    colors = None
    if len(data) > 1 and not np.isscalar(data[1]) and not (isinstance(data[1], torch.Tensor) and data[1].ndim == 0):
        c = _tensor(path, data[1], "colors").numpy().astype(np.float64)
        if c.shape != (n, 3):
            raise InputError(path, f"colors have shape {c.shape}, expected ({n}, 3)")
        colors = np.clip(np.round((c + 1.0) * 127.5), 0, 255).astype(np.uint8)
    labels = None
    if len(data) > 2 and data[2] is not None:
        lab = _tensor(path, data[2], "labels").numpy().astype(np.int64).reshape(-1)
        if lab.shape[0] != n:
            raise InputError(path, f"labels have {lab.shape[0]} entries for {n} points")
        labels = np.where((lab == -100) | (lab < 0), IGNORE_LABEL, lab)
    if not np.isfinite(coords).all():
        raise InputError(path, "coords contain NaN or inf")
    stem = path.name[: -len("_vh_clean_2.pth")] if path.name.endswith("_vh_clean_2.pth") else path.stem
    return Scene(
        name=name or stem,
        points=coords.astype(np.float32),
        kind="openscene",
        source=path,
        colors=colors,
        labels=labels,
        label_set=label_set if labels is not None else None,
    )


def open_scene(path: str | Path, reference_label_set: str | None = "scannet20") -> Scene:
    """Load a scene from anything we read: OpenScene ``.pth`` files here, everything else via ``sas3d.scene.readers``.

    ``reference_label_set`` names the label set of labels whose file does not say (OpenScene ``.pth``,
    a bare PLY with a ``label`` vertex property).
    """
    path = Path(path)
    if path.suffix == ".pth":
        return load_reference_scene(path, label_set=reference_label_set)
    from sas3d.scene.readers import load_scene

    scene = load_scene(path)
    if scene.labels is not None and scene.label_set is None:
        scene.label_set = reference_label_set
    return scene
