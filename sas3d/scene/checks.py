"""Input checks every layout reader shares: matrices, poses, intrinsics against image sizes, points.

Each failure is one :class:`InputError` naming the file and the problem.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from sas3d.errors import ConfigError, InputError

log = logging.getLogger("sas3d.scene")

_POSE_DET_EPS = 1e-6
# The principal point of a camera sits near its image centre (real cameras: within ~5 % of the
# size). Intrinsics whose principal point is off by more than this fraction of the width / height
# (or one pixel, for tiny images) describe another resolution: this catches resizes by 3/2 or more.
PRINCIPAL_POINT_SLACK = 0.15
# Uniform resizes recognised between the intrinsics' resolution and an image (OpenScene's
# preprocessing halves ScanNet's 640x480 depth to 320x240 and keeps intrinsic_depth.txt).
_RESIZE_FACTORS = tuple(sorted({Fraction(p, q) for p in range(1, 9) for q in range(1, 9)} - {Fraction(1)}))
_RESIZE_TOLERANCE = 0.03
# Colour maps are resampled to the depth resolution by plain scaling: the aspect ratios must agree
# (ScanNet: colour 1296x968 = 1.339, depth 640x480 = 1.333).
ASPECT_TOLERANCE = 0.03


def load_matrix(path: Path, what: str, missing: str | None = None) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, missing or f"{what} file not found")
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(path, f"cannot parse {what} as numbers ({exc})") from None


def check_pose(path: Path, m: np.ndarray) -> np.ndarray:
    if m.shape != (4, 4):
        raise InputError(path, f"pose must be a 4x4 matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, "pose contains NaN/inf values (invalid camera pose)")
    if abs(np.linalg.det(m)) < _POSE_DET_EPS:
        raise InputError(path, f"pose is not invertible (determinant {np.linalg.det(m):.3g})")
    return m.astype(np.float64)


def check_intrinsics(path: Path, m: np.ndarray) -> np.ndarray:
    if m.shape == (4, 4) or m.shape == (3, 4):
        m = m[:3, :3]
    if m.shape != (3, 3):
        raise InputError(path, f"intrinsics must be 3x3 (or 4x4), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, "intrinsics contain NaN/inf values")
    if m[0, 0] <= 0 or m[1, 1] <= 0:
        raise InputError(path, f"intrinsics have non-positive focal length (fx={m[0, 0]}, fy={m[1, 1]})")
    return m.astype(np.float64)


def load_intrinsics(path: Path, missing: str | None = None) -> np.ndarray:
    return check_intrinsics(path, load_matrix(path, "intrinsics", missing or "intrinsics file missing"))


def _centred(k: np.ndarray, size: tuple[int, int]) -> bool:
    # pixel centres at integer coordinates: the image centre is at ((W - 1) / 2, (H - 1) / 2)
    return all(abs(c - (n - 1) / 2) <= max(PRINCIPAL_POINT_SLACK * n, 1.0) for c, n in ((k[0, 2], size[0]), (k[1, 2], size[1])))


def scale_intrinsics(k: np.ndarray, factor: float) -> np.ndarray:
    """Intrinsics of the same camera after resizing its image by ``factor`` (pixel-centre convention)."""
    out = k.copy()
    out[0, 0] *= factor
    out[1, 1] *= factor
    out[0, 2] = (k[0, 2] + 0.5) * factor - 0.5
    out[1, 2] = (k[1, 2] + 0.5) * factor - 0.5
    return out


def intrinsics_for_image(k: np.ndarray, size: tuple[int, int], k_path: Path, image: Path) -> np.ndarray:
    """``k`` checked against an image of ``size`` = (width, height) that it must describe.

    As they are when the principal point lies near the image centre (:data:`PRINCIPAL_POINT_SLACK`);
    scaled when the image is a uniform resize (factor p/q, p, q <= 8) of the resolution they
    describe, which is logged (OpenScene's ``adjust_intrinsic`` does the same for its 320x240
    ScanNet frames); otherwise InputError naming both files.
    """
    if _centred(k, size):
        return k
    # the factor that brings the principal point to the image centre, per axis
    wanted = (size[0] / (2 * k[0, 2] + 1), size[1] / (2 * k[1, 2] + 1))
    factor = min(_RESIZE_FACTORS, key=lambda f: max(abs(w / float(f) - 1) for w in wanted))
    f = float(factor)
    if all(abs(w / f - 1) <= _RESIZE_TOLERANCE for w in wanted) and _centred(scale_intrinsics(k, f), size):
        log.warning(
            "%s describes %dx%d images but %s is %dx%d: using the intrinsics scaled by %s",
            k_path, round(size[0] / f), round(size[1] / f), image, size[0], size[1], factor,
        )
        return scale_intrinsics(k, f)
    raise InputError(
        image,
        f"is {size[0]}x{size[1]} but {k_path.name} puts the principal point at ({k[0, 2]:g}, {k[1, 2]:g}), "
        f"far from this image's centre: the intrinsics are for another resolution "
        f"(about {2 * k[0, 2] + 1:.0f}x{2 * k[1, 2] + 1:.0f}); give images and intrinsics of one resolution",
    )


def check_same_size(path: Path, size: tuple[int, int], reference: str, ref_size: tuple[int, int], why: str) -> None:
    if size != ref_size:
        raise InputError(path, f"is {size[0]}x{size[1]} but {reference} is {ref_size[0]}x{ref_size[1]} ({why})")


def check_aspect(color: Path, csize: tuple[int, int], depth: Path, dsize: tuple[int, int]) -> None:
    ca, da = csize[0] / csize[1], dsize[0] / dsize[1]
    if abs(ca / da - 1.0) > ASPECT_TOLERANCE:
        raise InputError(
            color,
            f"colour is {csize[0]}x{csize[1]} (aspect {ca:.3f}) but depth {depth.name} is {dsize[0]}x{dsize[1]} "
            f"(aspect {da:.3f}): colour is resampled to the depth resolution, so both must show one view",
        )


@dataclass
class PoseReader:
    """Reads and checks camera poses; ``skip_invalid`` turns a bad pose into a skipped frame.

    ``skip_neg_inf``: skip all-``-inf`` poses without being asked (ScanNet's SensReader writes
    them for frames where tracking was lost). Skipped frames are recorded in ``skipped``.
    """

    skip_invalid: bool = False
    skip_neg_inf: bool = False
    skipped: list[str] = field(default_factory=list)

    def read(self, path: Path, color: Path) -> np.ndarray | None:
        m = load_matrix(path, "pose", missing=f"pose file missing for frame {color.name}")
        if self.skip_neg_inf and m.size and np.isneginf(m).all():
            self.skipped.append(f"{path.name}: all -inf (tracking lost)")
            return None
        try:
            return check_pose(path, m)
        except InputError as exc:
            if not self.skip_invalid:
                raise InputError(path, f"{exc.problem}; pass --skip-invalid-poses to leave such frames out") from None
            self.skipped.append(f"{path.name}: {exc.problem}")
            return None

    def report(self, scene: str, total: int) -> None:
        if self.skipped:
            log.warning(
                "%s: skipped %d of %d frames with invalid camera poses (%s%s)",
                scene, len(self.skipped), total, "; ".join(self.skipped[:3]), ", ..." if len(self.skipped) > 3 else "",
            )


def check_points(path: Path, pts: np.ndarray) -> np.ndarray:
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(path, f"points must be (N, 3), got shape {pts.shape}")
    if len(pts) == 0:
        raise InputError(path, "point cloud has zero points")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise InputError(path, f"{int(bad.sum())} points have NaN/inf coordinates (first at index {int(np.argmax(bad))})")
    return pts


def stride(frames: list, step: int | None, default: int) -> list:
    step = default if step is None else int(step)
    if step < 1:
        raise ConfigError(f"frame_stride must be >= 1, got {step}")
    return frames[::step]


def stride_by_number(frames: list[Path], step: int | None, default: int) -> list[Path]:
    """Keep frames whose number is a multiple of the stride (OpenScene: every 20th ScanNet frame).

    Selecting by frame number rather than list position gives the same frames on a full export and
    keeps every frame of an export already thinned to 0, 20, 40, ... (what render-views writes).
    """
    step = default if step is None else int(step)
    if step < 1:
        raise ConfigError(f"frame_stride must be >= 1, got {step}")
    return [f for f in frames if numeric_key(f)[0] % step == 0]


def numeric_key(p: Path) -> tuple:
    m = re.search(r"\d+", p.stem)
    return (int(m.group()) if m else float("inf"), p.name)


def no_options(path: Path, options: dict) -> None:
    if options:
        raise InputError(path, f"unknown load_scene option(s) for this layout: {', '.join(sorted(options))}")
