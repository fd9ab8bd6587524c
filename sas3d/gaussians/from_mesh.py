"""A valid Gaussian scene from a triangle mesh, for tests and the benchmark (no 3DGS training).

``mode="face"``: one Gaussian per triangle, centred at its centroid, with the covariance of the
uniform distribution over the triangle, ``(1/12) sum_i (v_i - m)(v_i - m)^T``, its standard
deviations multiplied by ``scale_factor`` so that neighbouring Gaussians overlap (at 1.0 a
Gaussian reaches only ~exp(-4) of its opacity at its triangle's corners, leaving holes at the
vertices) and its thickness along the normal floored at ``min_scale``. Colour is the mean vertex
colour, the label the majority of the three vertex labels (else the first vertex's).
``mode="vertex"``: one flat disc per vertex, oriented by the area-weighted vertex normal, with an
in-plane standard deviation of ``scale_factor`` x half the mean incident edge length.

A user's trained scene needs none of this: :func:`sas3d.gaussians.ply.read_gaussian_ply` reads it.
"""

from __future__ import annotations

import numpy as np

from sas3d.gaussians.model import SH_C0, GaussianScene

FACE_SCALE_FACTOR = 1.5  # see the module docstring; measured coverage in tests/test_gaussians_render.py
VERTEX_SCALE_FACTOR = 1.0
MIN_SCALE = 0.002  # metres: thickness of the flat Gaussians along the surface normal
DEFAULT_OPACITY = 0.95


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions (w, x, y, z), w >= 0 (Shepperd's method)."""
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=1)
    best = cand.argmax(axis=1)
    q = np.empty((len(r), 4))
    s = np.sqrt(np.maximum(cand[np.arange(len(r)), best], 1e-12)) * 2  # 4 * the largest component
    d21, d02, d10 = r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]
    a01, a02, a12 = r[:, 0, 1] + r[:, 1, 0], r[:, 0, 2] + r[:, 2, 0], r[:, 1, 2] + r[:, 2, 1]
    rows = {
        0: (s / 4, d21 / s, d02 / s, d10 / s),
        1: (d21 / s, s / 4, a01 / s, a02 / s),
        2: (d02 / s, a01 / s, s / 4, a12 / s),
        3: (d10 / s, a02 / s, a12 / s, s / 4),
    }
    for k, comps in rows.items():
        sel = best == k
        q[sel] = np.stack([c[sel] for c in comps], axis=1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _proper(vecs: np.ndarray) -> np.ndarray:
    """Eigenvector matrices (N, 3, 3) with det +1 (flip the last column where needed)."""
    vecs = vecs.copy()
    flip = np.linalg.det(vecs) < 0
    vecs[flip, :, 2] *= -1
    return vecs


def _dc(colors: np.ndarray | None, n: int) -> np.ndarray:
    rgb = np.full((n, 3), 180.0) if colors is None else np.asarray(colors, dtype=np.float64)
    return ((rgb / 255.0 - 0.5) / SH_C0).astype(np.float32)


def gaussians_from_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None,
                        labels: np.ndarray | None = None, *, name: str = "mesh", mode: str = "face",
                        scale_factor: float | None = None, min_scale: float = MIN_SCALE,
                        opacity: float = DEFAULT_OPACITY, label_set: str | None = "scannet20") -> GaussianScene:
    """Gaussians approximating the surface of a mesh (see the module docstring). ``colors`` (V, 3)
    uint8 and ``labels`` (V,) int per vertex are optional."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if mode == "face":
        factor = FACE_SCALE_FACTOR if scale_factor is None else scale_factor
        tri = v[f]  # (F, 3, 3)
        area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        keep = area2 > 1e-12
        f, tri = f[keep], tri[keep]
        means = tri.mean(axis=1)
        d = tri - means[:, None, :]
        cov = np.einsum("fki,fkj->fij", d, d) / 12.0
        vals, vecs = np.linalg.eigh(cov)  # ascending: the first axis is the normal
        scales = np.maximum(np.sqrt(np.clip(vals, 0, None)) * factor, min_scale)
        rot = _proper(vecs)
        col = None if colors is None else np.asarray(colors, dtype=np.float64)[f].mean(axis=1)
        lab = None
        if labels is not None:
            l3 = np.asarray(labels, dtype=np.int64)[f]
            lab = np.where((l3[:, 0] == l3[:, 1]) | (l3[:, 0] == l3[:, 2]), l3[:, 0], np.where(l3[:, 1] == l3[:, 2], l3[:, 1], l3[:, 0]))
    elif mode == "vertex":
        factor = VERTEX_SCALE_FACTOR if scale_factor is None else scale_factor
        means = v
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # area-weighted face normals
        normals = np.zeros_like(v)
        for k in range(3):
            np.add.at(normals, f[:, k], fn)
        edge_sum, edge_cnt = np.zeros(len(v)), np.zeros(len(v))
        for a, b in ((0, 1), (1, 2), (2, 0)):
            length = np.linalg.norm(v[f[:, a]] - v[f[:, b]], axis=1)
            for idx in (f[:, a], f[:, b]):
                np.add.at(edge_sum, idx, length)
                np.add.at(edge_cnt, idx, 1)
        used = edge_cnt > 0
        nrm = np.linalg.norm(normals, axis=1)
        n_unit = np.where(nrm[:, None] > 0, normals / np.maximum(nrm, 1e-12)[:, None], [0.0, 0.0, 1.0])
        helper = np.where(np.abs(n_unit[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        t1 = np.cross(n_unit, helper)
        t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
        t2 = np.cross(n_unit, t1)
        rot = np.stack([n_unit, t1, t2], axis=2)  # columns: normal, tangent, bitangent
        rot = _proper(rot)
        sigma = np.where(used, edge_sum / np.maximum(edge_cnt, 1), 0.0) / 2.0 * factor
        scales = np.stack([np.full(len(v), min_scale), np.maximum(sigma, min_scale), np.maximum(sigma, min_scale)], axis=1)
        col = None if colors is None else np.asarray(colors, dtype=np.float64)
        lab = None if labels is None else np.asarray(labels, dtype=np.int64)
        keep_v = used
        means, scales, rot = means[keep_v], scales[keep_v], rot[keep_v]
        col = None if col is None else col[keep_v]
        lab = None if lab is None else lab[keep_v]
    else:
        raise ValueError(f"mode must be 'face' or 'vertex', got {mode!r}")
    n = len(means)
    return GaussianScene(
        name=name,
        means=means.astype(np.float32),
        scales=scales.astype(np.float32),
        rotations=matrix_to_quaternion(rot).astype(np.float32),
        opacities=np.full(n, opacity, dtype=np.float32),
        sh_dc=_dc(col, n),
        labels=lab,
        label_set=label_set if lab is not None else None,
    )
