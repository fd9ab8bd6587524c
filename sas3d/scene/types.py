"""The boundary types every later stage reads: a Scene (3D points + optional mesh/labels) and its Frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_LABEL = 255  # ScanNet/OpenScene convention for "no ground truth"
FRAME_DOMAINS = ("scene", "probe")  # Frame.domain values


@dataclass(frozen=True)
class Frame:
    """One posed camera view.

    ``intrinsics`` is 3x3 at the resolution ``(height, width)`` that projection uses: the depth
    resolution when there is depth (teacher maps of any size are resampled to it, nearest).
    ``pose`` is 4x4 camera-to-world (OpenCV convention: x right, y down, z forward), metres.
    """

    color_path: Path
    intrinsics: np.ndarray
    pose: np.ndarray
    width: int
    height: int
    depth_path: Path | None = None
    depth_scale: float = 1000.0  # raw depth units per metre (ScanNet/7-Scenes mm; Matterport 4000)
    label_path: Path | None = None  # optional ground-truth label render (uint16 label-set ids), for simulated teachers
    # What the image is: "scene" (a view of a scanned scene) or "probe" (a generated image that capability
    # scores teachers on, SAS 3.2). Real teachers ignore it; simulated ones model their domain gap with it.
    domain: str = "scene"

    @property
    def stem(self) -> str:
        """Frame identifier used to name per-frame artefacts: the colour file's stem."""
        return self.color_path.stem


@dataclass
class Scene:
    """A 3D scan: N points (metres) plus whatever the source provides."""

    name: str
    points: np.ndarray  # (N, 3) float32
    kind: str  # reader that produced it: scannet | 7scenes | nuscenes | matterport | ply | embedded
    source: Path | None = None
    colors: np.ndarray | None = None  # (N, 3) uint8
    faces: np.ndarray | None = None  # (F, 3) int64 mesh faces
    labels: np.ndarray | None = None  # (N,) int64 in label_set indices, IGNORE_LABEL where unknown
    label_set: str | None = None  # e.g. "scannet20"
    superpoints: np.ndarray | None = None  # (N,) int64
    frames: list[Frame] = field(default_factory=list)
    skipped_frames: list[str] = field(default_factory=list)  # "<pose file>: <why>" for frames left out

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def __repr__(self) -> str:  # the arrays would flood a terminal
        parts = [f"{self.num_points} points", f"{len(self.frames)} frames"]
        if self.skipped_frames:
            parts.append(f"{len(self.skipped_frames)} skipped")
        if self.faces is not None:
            parts.append(f"{len(self.faces)} faces")
        if self.labels is not None:
            parts.append(f"labels={self.label_set}")
        return f"Scene({self.name!r}, kind={self.kind}, {', '.join(parts)})"
