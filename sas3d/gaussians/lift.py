"""Lift per-frame teacher features onto Gaussians, then combine teachers exactly as for points.

Two ways to lift one teacher's (h, w, C) maps over the posed views (SAS Tab. 5 / Semantic Gaussians:
2D features projected onto the Gaussians):

* ``alpha`` (default): every Gaussian accumulates the features of the pixels it contributes to,
  weighted by its alpha-blending weight there, ``w_i(p) = alpha_i(p) T_i(p)`` (the weight the
  rasteriser gives it when compositing that pixel, :mod:`sas3d.gaussians.raster`), over all views:
  ``f_i = sum_{v,p} w_i(p) F_v(p) / sum_{v,p} w_i(p)``. Occlusion is built in: a hidden Gaussian
  gets (almost) no weight.
* ``centre`` (the simpler baseline): the Gaussian centre is projected like a point
  (:func:`sas3d.geometry.projection.project_points`: nearest pixel, border margin, relative depth
  test), against the median depth rendered from the Gaussians themselves (a trained 3DGS scene
  usually comes with no depth maps), and the features of the views that see it are averaged.

Both read a map of any resolution at the frame's pixel centres with the nearest-exact convention of
point fusion (:func:`sas3d.fusion.accumulate.map_rows`) and skip the projection config's border
margin. As in point fusion (:mod:`sas3d.fusion.multiview`, "Validity"), a map cell that is zero in
every channel holds no prediction (a mask teacher without a mask there): its pixels add neither
feature nor weight, so a Gaussian's feature is the mean over the pixels / views that predict, and a
Gaussian reached only by such pixels is unseen. The result is a :class:`~sas3d.fusion.features.PointFeatures` with one row per Gaussian, so
per-teacher results go through :func:`sas3d.fusion.guided.fuse_teachers` unchanged (same
capability scores, same Eq. 6-8) -- see :func:`combine_teachers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.multiview import map_rows
from sas3d.gaussians.model import GaussianScene
from sas3d.identity import TEACHER, TEXT_SPACE, text_space_of
from sas3d.gaussians.raster import composite, lift_accumulate, project_gaussians
from sas3d.geometry.projection import ProjectionConfig, project_points, projection_config_for
from sas3d.scene.types import Frame

METHODS = ("alpha", "centre")


@dataclass
class LiftConfig:
    """How teacher maps are lifted onto the Gaussians."""

    method: str = "alpha"  # "alpha" (blending-weighted) | "centre" (centre projection + depth test)
    # border margin (both methods) and relative depth threshold (centre); OpenScene indoor defaults
    projection: ProjectionConfig = field(default_factory=lambda: projection_config_for("scannet"))
    min_weight: float = 0.0  # alpha: a Gaussian is "seen" when its summed blending weight exceeds this


def pixel_rows(frame: Frame, map_width: int, map_height: int, border_margin: int) -> np.ndarray:
    """(H*W,) int64 row of a (map_height * map_width, C) table for every frame pixel (nearest, pixel
    centres as in point fusion), -1 within ``border_margin`` of the image border."""
    width, height = int(frame.width), int(frame.height)
    idx = torch.arange(width * height, dtype=torch.int64)
    rows = map_rows(idx, width, height, map_width, map_height).numpy()
    u, v = np.arange(width * height) % width, np.arange(width * height) // width
    m = int(border_margin)
    inside = (u >= m) & (u < width - m) & (v >= m) & (v < height - m)
    return np.where(inside, rows, -1).astype(np.int64)


def _as_table(features: Any, frame: Frame, channels: int | None) -> tuple[np.ndarray, int, int]:
    arr = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(frame.color_path, f"teacher output must be a non-empty (h, w, C) map, got shape {arr.shape}")
    if channels is not None and arr.shape[2] != channels:
        raise InputError(frame.color_path, f"teacher output has {arr.shape[2]} channels, earlier frames had {channels}")
    if not np.isfinite(arr).all():
        raise InputError(frame.color_path, "teacher output contains NaN or inf")
    h, w, c = arr.shape
    return np.ascontiguousarray(arr.reshape(h * w, c), dtype=np.float32), w, h


class _Lifter:
    """Running per-Gaussian feature sum (N, C) float32 and weight (N,) of one lifting method."""

    def __init__(self, gaussians: GaussianScene, cfg: LiftConfig):
        if cfg.method not in METHODS:
            raise ConfigError(f"lifting method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
        self.gaussians, self.cfg = gaussians, cfg
        self.total: np.ndarray | None = None
        self.weight = np.zeros(gaussians.num_gaussians, dtype=np.float64)
        self.centres = torch.from_numpy(np.asarray(gaussians.means, dtype=np.float64))

    def add(self, frame: Frame, projected: Any, table: np.ndarray, map_width: int, map_height: int) -> None:
        n = self.gaussians.num_gaussians
        if self.total is None:
            self.total = np.zeros((n, table.shape[1]), dtype=np.float32)
        predicts = np.abs(table).max(axis=1) > 0  # an all-zero map cell is no prediction (module docstring)
        if self.cfg.method == "alpha":
            rows = pixel_rows(frame, map_width, map_height, self.cfg.projection.border_margin)
            rows = np.where((rows >= 0) & predicts[np.maximum(rows, 0)], rows, -1)
            lift_accumulate(projected, table, rows, self.total, self.weight)
            return
        _, _, depth = composite(projected, np.zeros((n, 1), np.float32))
        point_idx, pixel_idx = project_points(self.centres, frame, torch.from_numpy(depth), self.cfg.projection)
        rows = map_rows(pixel_idx, int(frame.width), int(frame.height), map_width, map_height).numpy()
        idx = point_idx.numpy()
        keep = predicts[rows]
        idx, rows = idx[keep], rows[keep]
        self.total[idx] += table[rows]  # project_points lists each point at most once
        self.weight[idx] += 1.0

    def result(self, teacher_names: Sequence[str], frames_used: int) -> PointFeatures:
        assert self.total is not None
        seen = self.weight > self.cfg.min_weight
        feats = np.zeros_like(self.total)
        feats[seen] = self.total[seen] / self.weight[seen, None].astype(np.float32)
        if not np.isfinite(feats).all() or np.abs(feats).max(initial=0) >= 65504:
            raise InputError(None, "lifted features are not finite in float16 (teacher values out of range)")
        metadata = {
            "scene": self.gaussians.name,
            "fusion": f"lift-{self.cfg.method}",
            "teachers": list(teacher_names),
            "num_frames": frames_used,
            "config": to_dict(self.cfg),
            "gaussians": self.gaussians.identity(),
            "nearest": "pixel-centre (nearest-exact)",
        }
        if any("simulated" in str(t).lower() for t in teacher_names):
            metadata["note"] = "lifted from SIMULATED teacher outputs"
        return PointFeatures(torch.from_numpy(feats).to(torch.float16), torch.from_numpy(seen), metadata)


def lift_maps_multi(gaussians: GaussianScene, maps: Iterable[tuple[Frame, Any]], cfgs: Sequence[LiftConfig], *,
                    teacher_names: Sequence[str] = (), progress: bool = True, total: int | None = None) -> list[PointFeatures]:
    """:func:`lift_maps` for several configs in one pass over the maps (each map is predicted once)."""
    from tqdm.auto import tqdm

    lifters = [_Lifter(gaussians, cfg) for cfg in cfgs]
    channels, frames_used = None, 0
    desc = f"lift ({', '.join(c.method for c in cfgs)}) {gaussians.name}"
    for frame, features in tqdm(maps, total=total, desc=desc, unit="view", disable=not progress):
        table, mw, mh = _as_table(features, frame, channels)
        channels = table.shape[1]
        projected = project_gaussians(gaussians, frame)
        for lifter in lifters:
            lifter.add(frame, projected, table, mw, mh)
        frames_used += 1
        del features, table
    if frames_used == 0:
        raise InputError(None, f"no views to lift onto Gaussian scene {gaussians.name!r}")
    return [lifter.result(teacher_names, frames_used) for lifter in lifters]


def lift_maps(gaussians: GaussianScene, maps: Iterable[tuple[Frame, Any]], cfg: LiftConfig | None = None, *,
              teacher_names: Sequence[str] = (), progress: bool = True, total: int | None = None) -> PointFeatures:
    """Lift (frame, (h, w, C) map) pairs onto the Gaussians; one map alive at a time.

    Returns per-Gaussian float16 features (zeros and ``seen=False`` where no pixel / view reached the
    Gaussian) with metadata naming the Gaussian scene (its fingerprint), method, teachers and frames.
    """
    return lift_maps_multi(gaussians, maps, [cfg or LiftConfig()], teacher_names=teacher_names, progress=progress,
                           total=total)[0]


def lift_teacher(gaussians: GaussianScene, frames: Sequence[Frame], teacher: Any,
                 cfg: LiftConfig | Sequence[LiftConfig] | None = None, *, progress: bool = True) -> Any:
    """Run ``teacher.predict`` on every frame (one at a time) and lift its outputs: one PointFeatures,
    or a list of them when ``cfg`` is a sequence of configs (the teacher still runs once per frame)."""
    maps = ((frame, teacher.predict(frame)) for frame in frames)
    name = getattr(teacher, "name", type(teacher).__name__)
    cfgs = [cfg or LiftConfig()] if cfg is None or isinstance(cfg, LiftConfig) else list(cfg)
    out = lift_maps_multi(gaussians, maps, cfgs, teacher_names=[name], progress=progress, total=len(frames))
    for pf in out:  # the same identities as point fusion records (sas3d.identity)
        pf.metadata[TEACHER] = getattr(teacher, "identity", name)
        if getattr(teacher, "text_space", None) is not None:
            pf.metadata[TEXT_SPACE] = teacher.text_space
    return out if cfg is not None and not isinstance(cfg, LiftConfig) else out[0]


def combine_teachers(features: Sequence[PointFeatures], teacher_names: Sequence[str], method: str, label_set: Any,
                     encoder: Any, capability: Any = None, capability_source: str | None = None) -> PointFeatures:
    """Per-teacher lifted features -> one, by :func:`sas3d.fusion.guided.fuse_teachers` with the label
    set's prompts as vocabulary and, for ``guided``, the capability scores of these teachers
    (``capability``: a :class:`sas3d.capability.Capability`). The same call the point pipeline makes."""
    from sas3d.fusion.guided import GuidedFusionConfig, fuse_teachers

    class_text = encoder.encode(label_set.prompts())
    scores = confusion = None
    if method in ("guided", "confusion"):
        if capability is None:
            raise ConfigError(f"{method} fusion needs a capability file (sas3d capability ... --out cap.json)")
        identities = [(pf.metadata or {}).get(TEACHER) for pf in features]
        rows = capability.bind(list(teacher_names), identities, label_set.classes, text_space_of(encoder), capability_source)
        scores = torch.as_tensor(capability.scores_for(rows, label_set.classes), dtype=torch.float32)
        if method == "confusion":
            confusion = torch.as_tensor(capability.confusion_for(rows, label_set.classes))
    fused = fuse_teachers(list(features), class_text, method, scores, GuidedFusionConfig(), label_set.catch_all_index,
                          teacher_names=list(teacher_names), capability_source=capability_source, capability_confusion=confusion)
    fused.metadata["gaussians"] = features[0].metadata.get("gaussians")
    fused.metadata["lifting"] = features[0].metadata.get("fusion")
    return fused


def check_features_match(features: PointFeatures, gaussians: GaussianScene, path: Any = None) -> None:
    """InputError unless ``features`` were lifted onto (or predicted for) this Gaussian scene."""
    ident = (features.metadata or {}).get("gaussians")
    if features.num_points != gaussians.num_gaussians:
        raise InputError(path, f"has {features.num_points} rows but the Gaussian scene {gaussians.name!r} has "
                               f"{gaussians.num_gaussians} Gaussians")
    if isinstance(ident, dict) and ident.get("fingerprint") not in (None, gaussians.fingerprint()):
        raise InputError(path, f"was computed for Gaussian scene {ident.get('name')!r} (fingerprint {ident.get('fingerprint')}), "
                               f"not for {gaussians.name!r} (fingerprint {gaussians.fingerprint()})")
