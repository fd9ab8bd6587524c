"""CPU tile rasteriser for 3D Gaussians (numba): alpha compositing of per-Gaussian values into a view.

Follows the forward pass of the reference 3DGS rasteriser (Kerbl et al. 2023,
``diff-gaussian-rasterization``) and gsplat:

1. Projection (EWA splatting, Zwicker et al. 2002): camera-space centre t (Gaussians with
   ``t_z <= near`` are culled), ``cov2d = J W cov3d W^T J^T + 0.3 I`` with the perspective Jacobian
   J at t (x/z and y/z clamped to 1.3x the field of view, as gsplat's ``persp_proj``; the 0.3 px^2
   is 3DGS's low-pass filter), conic = cov2d^-1, radius = ceil(3 sqrt(largest eigenvalue)).
2. Binning: every Gaussian is listed in the 16x16-pixel tiles its ``[mean - radius, mean + radius]``
   square touches, front to back by camera depth (a stable sort, ties by Gaussian index).
3. Per pixel, front to back: ``alpha = min(0.99, opacity * exp(-d^T conic d / 2))``; Gaussians with
   ``alpha < 1/255`` are skipped; the walk stops before a Gaussian that would bring the
   transmittance T below 1e-4; otherwise the pixel gains ``alpha * T * value`` and
   ``T *= 1 - alpha``. One departure from the reference: a Gaussian contributes only within 3
   standard deviations (``d^T conic d <= 9``), an ellipse that lies inside its bounding square, so
   the result does not depend on the tiling (the reference evaluates every pixel of the tile rect).

Pixel (row v, column u) is sampled at the image coordinate (u, v) -- integer coordinates are pixel
centres, as in the reference 3DGS (``ndc2Pix``), the ScanNet intrinsics and
:mod:`sas3d.geometry.raster`. Camera: ``pose`` 4x4 camera-to-world, OpenCV axes, metres.

:func:`composite` returns the image and the final transmittance; :func:`lift_accumulate` walks the
same pixels but scatters each pixel's feature into the Gaussians that contribute to it, weighted by
their blending weight ``alpha * T`` (for :mod:`sas3d.gaussians.lift`). Tiles run in parallel
(numba ``prange``), every pixel is written by one iteration, so images are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from sas3d.geometry.projection import pinhole, world_to_camera

TILE = 16  # pixels per tile side (3DGS BLOCK_X = BLOCK_Y = 16)
NEAR = 0.05  # metres; Gaussians closer to the camera plane are culled (geometry/raster.py uses the same)
LOW_PASS = 0.3  # px^2 added to the 2D covariance diagonal (3DGS, gsplat eps2d)
ALPHA_MIN = 1.0 / 255.0  # 3DGS: skip nearly transparent contributions
ALPHA_MAX = 0.99  # 3DGS: clamp for numerical stability
T_MIN = 1e-4  # 3DGS: stop when the pixel is (almost) opaque
CUTOFF = 9.0  # Mahalanobis^2 beyond which a Gaussian does not contribute (3 sigma)


@dataclass
class ProjectedGaussians:
    """One view's projection: the Gaussians that survive culling and their depth-sorted tile lists."""

    index: np.ndarray  # (M,) int64 ids into the scene
    means2d: np.ndarray  # (M, 2) float64 pixel coordinates (u, v)
    conics: np.ndarray  # (M, 3) float64 (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: np.ndarray  # (M,) float64 camera z
    radii: np.ndarray  # (M,) int64 pixels
    opacities: np.ndarray  # (M,) float64
    tile_offsets: np.ndarray  # (tiles + 1,) int64: tile t lists entries[tile_offsets[t]:tile_offsets[t+1]]
    entries: np.ndarray  # (E,) int64 rows into the arrays above, front to back within each tile
    width: int
    height: int

    @property
    def tiles_x(self) -> int:
        return (self.width + TILE - 1) // TILE


def project_gaussians(gaussians: Any, camera: Any, near: float = NEAR) -> ProjectedGaussians:
    """Project a :class:`~sas3d.gaussians.model.GaussianScene` into ``camera`` (anything with
    ``intrinsics``, ``pose``, ``width``, ``height``: a :class:`sas3d.scene.types.Frame`)."""
    fx, fy, cx, cy = pinhole(camera)
    width, height = int(camera.width), int(camera.height)
    w2c = np.ascontiguousarray(world_to_camera(camera)[:3])
    n = gaussians.num_gaussians
    means2d, conics = np.empty((n, 2)), np.empty((n, 3))
    depths, radii = np.empty(n), np.zeros(n, dtype=np.int64)
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim = np.array([cx / fx + 0.3 * tan_x, (width - cx) / fx + 0.3 * tan_x, cy / fy + 0.3 * tan_y, (height - cy) / fy + 0.3 * tan_y])
    _project_kernel(np.ascontiguousarray(gaussians.means, dtype=np.float64), np.ascontiguousarray(gaussians.rotations, dtype=np.float64),
                    np.ascontiguousarray(gaussians.scales, dtype=np.float64), w2c, fx, fy, cx, cy, lim, width, height, float(near),
                    LOW_PASS, means2d, conics, depths, radii)
    keep = np.nonzero(radii > 0)[0]
    means2d, conics, depths, radii = means2d[keep], conics[keep], depths[keep], radii[keep]
    order = np.argsort(depths, kind="stable")
    tiles_x, tiles_y = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    offsets, entries = _bin_tiles(means2d, radii, order, tiles_x, tiles_y, TILE)
    return ProjectedGaussians(keep, means2d, conics, depths, radii,
                              np.asarray(gaussians.opacities, dtype=np.float64)[keep], offsets, entries, width, height)


@numba.njit(cache=True, nogil=True, parallel=True)
def _project_kernel(means, quats, scales, w2c, fx, fy, cx, cy, lim, width, height, near, low_pass,
                    means2d, conics, depths, radii):  # pragma: no cover - compiled
    """Per Gaussian: camera centre, 2D covariance ``J W R S S^T R^T W^T J^T + low_pass I``, conic,
    3-sigma radius and pixel mean; ``radii[i] = 0`` marks a culled Gaussian (behind ``near``,
    degenerate, or its square entirely off screen)."""
    for i in numba.prange(means.shape[0]):
        px, py, pz = means[i, 0], means[i, 1], means[i, 2]
        x = w2c[0, 0] * px + w2c[0, 1] * py + w2c[0, 2] * pz + w2c[0, 3]
        y = w2c[1, 0] * px + w2c[1, 1] * py + w2c[1, 2] * pz + w2c[1, 3]
        z = w2c[2, 0] * px + w2c[2, 1] * py + w2c[2, 2] * pz + w2c[2, 3]
        if not z > near:
            continue
        qw, qx, qy, qz = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
        qn = np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
        r = np.empty((3, 3))
        r[0, 0], r[0, 1], r[0, 2] = 1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)
        r[1, 0], r[1, 1], r[1, 2] = 2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)
        r[2, 0], r[2, 1], r[2, 2] = 2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)
        # M = W R S: the camera-space covariance is M M^T
        m = np.empty((3, 3))
        for a in range(3):
            for b in range(3):
                m[a, b] = (w2c[a, 0] * r[0, b] + w2c[a, 1] * r[1, b] + w2c[a, 2] * r[2, b]) * scales[i, b]
        tx = min(max(x / z, -lim[0]), lim[1]) * z
        ty = min(max(y / z, -lim[2]), lim[3]) * z
        j00, j02 = fx / z, -fx * tx / (z * z)
        j11, j12 = fy / z, -fy * ty / (z * z)
        # T = J M (2 x 3); cov2 = T T^T
        t0 = np.empty(3)
        t1 = np.empty(3)
        for b in range(3):
            t0[b] = j00 * m[0, b] + j02 * m[2, b]
            t1[b] = j11 * m[1, b] + j12 * m[2, b]
        ca = t0[0] * t0[0] + t0[1] * t0[1] + t0[2] * t0[2] + low_pass
        cb = t0[0] * t1[0] + t0[1] * t1[1] + t0[2] * t1[2]
        cc = t1[0] * t1[0] + t1[1] * t1[1] + t1[2] * t1[2] + low_pass
        det = ca * cc - cb * cb
        if not det > 0:
            continue
        mid = 0.5 * (ca + cc)
        lam = mid + np.sqrt(max(0.1, mid * mid - det))
        rad = int(np.ceil(3.0 * np.sqrt(lam)))
        u = fx * x / z + cx
        v = fy * y / z + cy
        if rad <= 0 or u + rad < 0 or u - rad > width - 1 or v + rad < 0 or v - rad > height - 1:
            continue
        means2d[i, 0], means2d[i, 1] = u, v
        conics[i, 0], conics[i, 1], conics[i, 2] = cc / det, -cb / det, ca / det
        depths[i] = z
        radii[i] = rad


@numba.njit(cache=True, nogil=True)
def _tile_range(m, r, tiles, tile):  # pragma: no cover - compiled
    lo = int(np.floor((m - r) / tile))
    hi = int(np.floor((m + r) / tile))
    return max(lo, 0), min(hi, tiles - 1)


@numba.njit(cache=True, nogil=True)
def _bin_tiles(means2d, radii, order, tiles_x, tiles_y, tile):  # pragma: no cover - compiled
    counts = np.zeros(tiles_x * tiles_y + 1, dtype=np.int64)
    for k in range(order.shape[0]):
        g = order[k]
        x0, x1 = _tile_range(means2d[g, 0], radii[g], tiles_x, tile)
        y0, y1 = _tile_range(means2d[g, 1], radii[g], tiles_y, tile)
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    entries = np.empty(offsets[-1], dtype=np.int64)
    for k in range(order.shape[0]):  # front to back: each tile's list ends up depth-sorted
        g = order[k]
        x0, x1 = _tile_range(means2d[g, 0], radii[g], tiles_x, tile)
        y0, y1 = _tile_range(means2d[g, 1], radii[g], tiles_y, tile)
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                t = ty * tiles_x + tx
                entries[fill[t]] = g
                fill[t] += 1
    return offsets, entries


@numba.njit(cache=True, nogil=True)
def _pixel_walk(u, v, first, last, entries, means2d, conics, opacities, hits, weights):  # pragma: no cover - compiled
    """Front-to-back walk of one pixel over its tile's entries[first:last] (module docstring, step 3):
    writes the contributing rows and their blending weights alpha * T into ``hits`` / ``weights``;
    returns (how many, final transmittance)."""
    T = 1.0
    n = 0
    for e in range(first, last):
        g = entries[e]
        dx, dy = means2d[g, 0] - u, means2d[g, 1] - v
        q = conics[g, 0] * dx * dx + 2.0 * conics[g, 1] * dx * dy + conics[g, 2] * dy * dy
        if q > CUTOFF:
            continue
        alpha = min(ALPHA_MAX, opacities[g] * np.exp(-0.5 * q))
        if alpha < ALPHA_MIN:
            continue
        test_t = T * (1.0 - alpha)
        if test_t < T_MIN:
            break
        hits[n] = g
        weights[n] = alpha * T
        n += 1
        T = test_t
    return n, T


@numba.njit(cache=True, nogil=True, parallel=True)
def _composite_kernel(means2d, conics, opacities, depths, offsets, entries, values, width, height, tiles_x, tile,
                      out, trans, median):  # pragma: no cover - compiled
    channels = values.shape[1]
    n_tiles = offsets.shape[0] - 1
    for t in numba.prange(n_tiles):
        u0, v0 = (t % tiles_x) * tile, (t // tiles_x) * tile
        hits = np.empty(offsets[t + 1] - offsets[t], dtype=np.int64)
        weights = np.empty(offsets[t + 1] - offsets[t], dtype=np.float64)
        for v in range(v0, min(v0 + tile, height)):
            for u in range(u0, min(u0 + tile, width)):
                n, T = _pixel_walk(u, v, offsets[t], offsets[t + 1], entries, means2d, conics, opacities, hits, weights)
                before = 1.0  # transmittance in front of the k-th hit: T_{k+1} = T_k - w_k
                for k in range(n):
                    g, w = hits[k], weights[k]
                    for c in range(channels):
                        out[v, u, c] += w * values[g, c]
                    if before > 0.5 and before - w <= 0.5:
                        median[v, u] = depths[g]
                    before -= w
                trans[v, u] = T


def composite(projected: ProjectedGaussians, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha-composite per-Gaussian ``values`` (N, C) (rows in scene order) into the projected view.

    Returns ``(image (H, W, C) float32, transmittance (H, W) float32, median_depth (H, W) float32)``:
    ``image`` holds ``sum_i alpha_i T_i value_i`` (no background; add ``background * transmittance``),
    the median depth is the depth at which T falls to 0.5 (0 where the pixel never gets that opaque).
    """
    p = projected
    vals = np.ascontiguousarray(np.asarray(values, dtype=np.float32)[p.index])
    if vals.ndim != 2:
        raise ValueError(f"values must be (N, C), got {np.shape(values)}")
    out = np.zeros((p.height, p.width, vals.shape[1]), dtype=np.float32)
    trans = np.ones((p.height, p.width), dtype=np.float32)
    median = np.zeros((p.height, p.width), dtype=np.float32)
    _composite_kernel(p.means2d, p.conics, p.opacities, p.depths, p.tile_offsets, p.entries, vals, p.width, p.height,
                      p.tiles_x, TILE, out, trans, median)
    return out, trans, median


@numba.njit(cache=True, nogil=True, parallel=True)
def _lift_kernel(means2d, conics, opacities, index, offsets, entries, width, height, tiles_x, tile, table, rows, n_blocks,
                 sum_f, sum_w):  # pragma: no cover - compiled
    # Parallel over channel blocks: each output element is written by one iteration, in pixel order,
    # so the sums do not depend on the number of threads.
    channels = table.shape[1]
    block = (channels + n_blocks - 1) // n_blocks
    n_tiles = offsets.shape[0] - 1
    longest = 0
    for t in range(n_tiles):
        longest = max(longest, offsets[t + 1] - offsets[t])
    for b in numba.prange(n_blocks):
        c0, c1 = b * block, min(channels, (b + 1) * block)
        hits = np.empty(longest, dtype=np.int64)
        weights = np.empty(longest, dtype=np.float64)
        for t in range(n_tiles):
            u0, v0 = (t % tiles_x) * tile, (t // tiles_x) * tile
            for v in range(v0, min(v0 + tile, height)):
                for u in range(u0, min(u0 + tile, width)):
                    row = rows[v * width + u]
                    if row < 0:
                        continue
                    n, _ = _pixel_walk(u, v, offsets[t], offsets[t + 1], entries, means2d, conics, opacities, hits, weights)
                    for k in range(n):
                        i, w = index[hits[k]], weights[k]
                        if b == 0:
                            sum_w[i] += w
                        for c in range(c0, c1):
                            sum_f[i, c] += w * table[row, c]


def lift_accumulate(projected: ProjectedGaussians, table: np.ndarray, rows: np.ndarray, sum_f: np.ndarray,
                    sum_w: np.ndarray) -> None:
    """Add ``w_i(p) * table[rows[p]]`` to ``sum_f[i]`` and ``w_i(p)`` to ``sum_w[i]`` for every pixel p
    (``rows`` (H*W,) int64, -1 = skip the pixel) and every Gaussian i with blending weight
    ``w_i(p) = alpha_i(p) T_i(p)`` there. ``sum_f`` (N, C) float32 and ``sum_w`` (N,) float64 are in
    scene order and updated in place."""
    p = projected
    if sum_f.dtype != np.float32 or sum_w.dtype != np.float64 or not sum_f.flags.c_contiguous:
        raise ValueError("sum_f must be C-contiguous float32 and sum_w float64")
    n_blocks = max(1, min(numba.get_num_threads(), table.shape[1]))
    _lift_kernel(p.means2d, p.conics, p.opacities, p.index, p.tile_offsets, p.entries, p.width, p.height, p.tiles_x, TILE,
                 np.ascontiguousarray(table, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.int64), n_blocks,
                 sum_f, sum_w)


def render(gaussians: Any, camera: Any, values: np.ndarray, near: float = NEAR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project and composite in one call (see :func:`composite`)."""
    return composite(project_gaussians(gaussians, camera, near), values)
