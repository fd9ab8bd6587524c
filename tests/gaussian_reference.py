"""Brute-force references for the Gaussian rasteriser tests: per pixel, every Gaussian, plain Python.

Written from the 3DGS definitions (EWA projection, front-to-back alpha blending), independently
of sas3d.gaussians.raster: scipy for the quaternion, numpy matrices per Gaussian, no tiles.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def splats_2d(gs, k, pose, width, height, near=0.05):
    """Per Gaussian: (visible, mean2d, conic (2x2), depth), from the EWA formula."""
    w2c = np.linalg.inv(pose)
    out = []
    for i in range(gs.num_gaussians):
        t = w2c[:3, :3] @ gs.means[i].astype(np.float64) + w2c[:3, 3]
        if t[2] <= near:
            out.append((False, None, None, t[2]))
            continue
        w, x, y, z = gs.rotations[i].astype(np.float64)
        r = Rotation.from_quat([x, y, z, w]).as_matrix()
        sigma = r @ np.diag(gs.scales[i].astype(np.float64) ** 2) @ r.T
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        limx = (cx / fx + 0.15 * width / fx, (width - cx) / fx + 0.15 * width / fx)
        limy = (cy / fy + 0.15 * height / fy, (height - cy) / fy + 0.15 * height / fy)
        tx = min(max(t[0] / t[2], -limx[0]), limx[1]) * t[2]
        ty = min(max(t[1] / t[2], -limy[0]), limy[1]) * t[2]
        jac = np.array([[fx / t[2], 0, -fx * tx / t[2] ** 2], [0, fy / t[2], -fy * ty / t[2] ** 2]])
        cov2 = jac @ w2c[:3, :3] @ sigma @ w2c[:3, :3].T @ jac.T + 0.3 * np.eye(2)
        mean = np.array([fx * t[0] / t[2] + cx, fy * t[1] / t[2] + cy])
        out.append((True, mean, np.linalg.inv(cov2), t[2]))
    return out


def blend_weights(gs, k, pose, width, height):
    """(H, W, N) blending weight alpha_i T_i of every Gaussian at every pixel, plus (H, W) final T."""
    splats = splats_2d(gs, k, pose, width, height)
    order = sorted((i for i, s in enumerate(splats) if s[0]), key=lambda i: (splats[i][3], i))
    weights = np.zeros((height, width, gs.num_gaussians))
    trans = np.ones((height, width))
    for v in range(height):
        for u in range(width):
            T = 1.0
            for i in order:
                _, mean, conic, _ = splats[i]
                d = mean - np.array([u, v], dtype=np.float64)
                q = d @ conic @ d
                if q > 9.0:
                    continue
                alpha = min(0.99, float(gs.opacities[i]) * np.exp(-0.5 * q))
                if alpha < 1.0 / 255.0:
                    continue
                if T * (1 - alpha) < 1e-4:
                    break
                weights[v, u, i] = alpha * T
                T *= 1 - alpha
            trans[v, u] = T
    return weights, trans


def random_scene(rng, n, depth=(1.0, 4.0), spread=1.0):
    """n anisotropic Gaussians in front of an identity camera (z forward)."""
    from sas3d.gaussians.model import GaussianScene

    z = rng.uniform(*depth, n)
    means = np.stack([rng.uniform(-spread, spread, n) * z * 0.5, rng.uniform(-spread, spread, n) * z * 0.4, z], axis=1)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return GaussianScene("random", means.astype(np.float32), rng.uniform(0.02, 0.3, (n, 3)).astype(np.float32),
                         q.astype(np.float32), rng.uniform(0.2, 1.0, n).astype(np.float32),
                         rng.normal(size=(n, 3)).astype(np.float32))
