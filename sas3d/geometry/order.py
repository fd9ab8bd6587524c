"""Space-filling-curve order of 3D points: points near each other in space get near indices.

Morton (Z-order) code: quantise each coordinate to 21 bits over the cloud's bounding cube and
interleave the bits (x in bit 0, y in bit 1, z in bit 2, then the next bit of each, ...), so the code
of cell (x, y, z) is ``sum_b x_b 2^(3b) + y_b 2^(3b+1) + z_b 2^(3b+2)``. Sorting by the code groups
the points of every octree cell, at every level, into one run of indices. Morton, "A computer
oriented geodetic data base and a new technique in file sequencing" (IBM, 1966).
"""

from __future__ import annotations

import numpy as np

BITS = 21  # per axis: 3 x 21 = 63 bits fit an unsigned 64-bit code

# (shift, mask) steps that move bit b of a 21-bit integer to bit 3b ("magic numbers" bit spreading)
_SPREAD = ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F), (4, 0x10C30C30C30C30C3),
           (2, 0x1249249249249249))


def _spread_bits(values: np.ndarray) -> np.ndarray:
    """Bit b of each (< 2^21) value moved to bit 3b."""
    x = values.astype(np.uint64) & np.uint64((1 << BITS) - 1)
    for shift, mask in _SPREAD:
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x


def _interleave(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Morton codes of the cells (x, y, z) (integers in [0, 2^21))."""
    return _spread_bits(x) | (_spread_bits(y) << np.uint64(1)) | (_spread_bits(z) << np.uint64(2))


def morton_codes(cells: np.ndarray) -> np.ndarray:
    """(N,) uint64 Morton codes of (N, 3) non-negative integer cells (< 2^21 per axis)."""
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != 3:
        raise ValueError(f"cells must be (N, 3), got shape {cells.shape}")
    if cells.size and (cells.min() < 0 or cells.max() >= 1 << BITS):
        raise ValueError(f"cells must lie in [0, 2^{BITS})")
    return _interleave(cells[:, 0], cells[:, 1], cells[:, 2])


def finite_bounds(coords: np.ndarray, finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis minimum and maximum over the last axis of ``coords`` (3, ..., n) (one row per axis, so
    the passes are contiguous), of the entries where ``finite`` (..., n) holds; +inf / -inf where none does."""
    if finite.all():
        return coords.min(axis=-1), coords.max(axis=-1)
    return np.where(finite, coords, np.inf).min(axis=-1), np.where(finite, coords, -np.inf).max(axis=-1)


def morton_order(points: np.ndarray) -> np.ndarray:
    """(N,) int64 permutation that sorts ``points`` (N, 3) by Morton code on a 2^21 grid over their
    bounding cube (scale-free: the same order for a room in metres or millimetres); ties keep the
    input order, and points with a NaN / inf coordinate come last (scene readers refuse them, but a
    Scene built in code may hold them; projection never sees them)."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    coords = np.ascontiguousarray(pts.T)  # (3, N): contiguous per-axis passes (fusion orders 200k+ points per scene)
    finite = np.isfinite(coords).all(axis=0)
    if not finite.any():
        return np.arange(len(pts), dtype=np.int64)
    low, high = finite_bounds(coords, finite)
    extent = float((high - low).max())
    scale = ((1 << BITS) - 1) / extent if extent > 0 else 0.0
    cells = np.floor((coords - low[:, None]) * scale)
    cells[:, ~finite] = 0
    cells = cells.astype(np.int64)  # in [0, 2^21) by construction
    codes = _interleave(cells[0], cells[1], cells[2])
    codes[~finite] = np.iinfo(np.uint64).max
    return np.argsort(codes, kind="stable").astype(np.int64)


__all__ = ["finite_bounds", "morton_codes", "morton_order"]
