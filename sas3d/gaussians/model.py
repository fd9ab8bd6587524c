"""GaussianScene: the activated parameters of a 3D Gaussian Splatting scene.

Conventions of the reference 3DGS code (Kerbl et al. 2023, ``scene/gaussian_model.py``), which gsplat
and nerfstudio's splatfacto exports follow: colour = 0.5 + C0 * f_dc (degree-0 spherical harmonic,
C0 = 1 / (2 sqrt(pi))), opacity = sigmoid(stored logit), scale = exp(stored log), rotation = the
normalised quaternion (w, x, y, z). The covariance is ``R S S^T R^T`` with S = diag(scale).
Here the arrays hold the *activated* values; :mod:`sas3d.gaussians.ply` converts to and from the
stored (logit / log / raw quaternion) form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi)), degree-0 SH basis (3DGS utils/sh_utils.py)


@dataclass
class GaussianScene:
    """N Gaussians (metres, world frame; camera poses as in :class:`sas3d.scene.types.Frame`)."""

    name: str
    means: np.ndarray  # (N, 3) float32 centres
    scales: np.ndarray  # (N, 3) float32 standard deviations along the local axes (exp of the stored log)
    rotations: np.ndarray  # (N, 4) float32 unit quaternions (w, x, y, z)
    opacities: np.ndarray  # (N,) float32 in (0, 1) (sigmoid of the stored logit)
    sh_dc: np.ndarray  # (N, 3) float32 degree-0 SH coefficients f_dc
    sh_rest: np.ndarray | None = None  # (N, M, 3) float32 higher bands (M = 3, 8 or 15), or None
    labels: np.ndarray | None = None  # (N,) int64 ground truth (only for scenes built from a labelled mesh)
    label_set: str | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.means)
        for key, shape in (("means", (n, 3)), ("scales", (n, 3)), ("rotations", (n, 4)), ("opacities", (n,)),
                           ("sh_dc", (n, 3))):
            if np.shape(getattr(self, key)) != shape:
                raise ValueError(f"GaussianScene.{key} has shape {np.shape(getattr(self, key))}, expected {shape}")
        if self.sh_rest is not None and (self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3):
            raise ValueError(f"GaussianScene.sh_rest has shape {self.sh_rest.shape}, expected ({n}, M, 3)")
        if self.labels is not None and np.shape(self.labels) != (n,):
            raise ValueError(f"GaussianScene.labels has shape {np.shape(self.labels)}, expected ({n},)")

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def colors(self) -> np.ndarray:
        """(N, 3) float32 view-independent RGB in [0, 1]: 0.5 + C0 * f_dc, clipped."""
        return np.clip(0.5 + SH_C0 * self.sh_dc, 0.0, 1.0).astype(np.float32)

    @property
    def colors_uint8(self) -> np.ndarray:
        return np.rint(self.colors * 255.0).astype(np.uint8)

    def rotation_matrices(self) -> np.ndarray:
        """(N, 3, 3) float64 rotation matrices of the (normalised) quaternions."""
        q = np.asarray(self.rotations, dtype=np.float64)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        w, x, y, z = q.T
        return np.stack([
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=1),
        ], axis=1)

    @cached_property
    def _covariances(self) -> np.ndarray:
        r = self.rotation_matrices()
        m = r * np.asarray(self.scales, dtype=np.float64)[:, None, :]
        return m @ np.swapaxes(m, 1, 2)

    def covariances(self) -> np.ndarray:
        """(N, 3, 3) float64 world covariances ``R diag(s)^2 R^T`` (computed once per scene object:
        treat the arrays as read-only)."""
        return self._covariances

    def fingerprint(self) -> str:
        """A short hash of the geometry (centres, scales, rotations, opacities): the identity that lifted
        features, checkpoints' renders and evaluations record, so they are never applied to another scene."""
        h = hashlib.sha1()
        for arr in (self.means, self.scales, self.rotations, self.opacities):
            h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def identity(self) -> dict:
        return {"name": self.name, "num_gaussians": self.num_gaussians, "fingerprint": self.fingerprint(),
                "source": None if self.source is None else str(self.source)}

    def subset(self, keep: np.ndarray) -> "GaussianScene":
        """The Gaussians at ``keep`` (index or bool mask), same name and source."""
        return GaussianScene(self.name, self.means[keep], self.scales[keep], self.rotations[keep], self.opacities[keep],
                             self.sh_dc[keep], None if self.sh_rest is None else self.sh_rest[keep],
                             None if self.labels is None else self.labels[keep], self.label_set, self.source)

    def __repr__(self) -> str:
        bands = 0 if self.sh_rest is None else {3: 1, 8: 2, 15: 3}.get(self.sh_rest.shape[1], -1)
        return f"GaussianScene({self.name!r}, {self.num_gaussians} Gaussians, SH degree {bands})"
