"""Numba CPU kernels of multi-view fusion (:mod:`sas3d.fusion.multiview`).

Split in two so that several teachers share one projection per frame:

* :func:`project_kernel` -- project every point into one frame and list the visible ones as
  (point index, pixel index) pairs, once per frame;
* :func:`add_group_kernel` -- for one teacher, add the map row under each listed pixel to that
  point's running sum, for a group of consecutive frames in one pass over the points;
* :func:`divide_kernel` -- the final ``sum / count``.

The float64 expressions of the projection are those of
:func:`sas3d.geometry.projection.project_points` in the same order, compiled without fastmath (no
reassociation or FMA contraction), so pixels, visibility and sums are bit-identical to the torch
path. Each kernel is compiled on first use and cached on disk; all release the GIL, so they run in
a background thread while the caller decodes the next frames' depths.
"""

from __future__ import annotations

import numpy as np

from sas3d.geometry.order import finite_bounds

_KERNELS: dict[str, object] = {}


def project_kernel():
    """``project(points, w2c, fx, fy, cx, cy, width, height, margin, depth, use_depth, threshold,
    run_centre, run_half, run_size, point_idx, pixel_idx) -> m``: the points visible in one frame,
    written to ``point_idx[:m]`` (ascending) and ``pixel_idx[:m]`` (``v * width + u``), buffers of length N
    reused across frames.

    Per point: world -> camera, pinhole, round half to even, border margin, relative depth test.
    Points ``r * run_size ...`` form run r, inside the box ``run_centre[r] +- run_half[r]`` (world;
    :func:`run_boxes`; NaN: never skipped). A run whose box lies wholly outside one of the frustum's
    five planes (behind the camera, or a pixel beyond the margin on any side, so no rounding can bring
    a point back in) is skipped without projecting its points: with the points in Morton order, a
    frame that sees a quarter of the scene skips most of the rest. The same points come out as
    without the test. One sequential pass: the compaction needs the order.
    """
    if "project" not in _KERNELS:
        import numba

        @numba.njit(cache=True, nogil=True)
        def project(points, w2c, fx, fy, cx, cy, width, height, margin, depth, use_depth, threshold,
                    run_centre, run_half, run_size, point_idx, pixel_idx):  # pragma: no cover - compiled
            # Frustum planes n . p + d >= 0 in world coordinates, each a combination a * x_cam + b * z_cam
            # (x_cam = w2c[0] . p + w2c[0, 3], ...): z > 0, and u, v within one pixel beyond the margin
            # (u = x fx / z + cx > margin - 1  <=>  fx x + (cx - margin + 1) z > 0 for z > 0, ...).
            coef = np.empty((5, 3))  # (row of w2c: 0 = x or 1 = y, its factor, the factor of z)
            coef[0] = (0.0, 0.0, 1.0)
            coef[1] = (0.0, fx, cx - margin + 1.0)
            coef[2] = (0.0, -fx, width - margin + 1.0 - cx)
            coef[3] = (1.0, fy, cy - margin + 1.0)
            coef[4] = (1.0, -fy, height - margin + 1.0 - cy)
            normal = np.empty((5, 4))
            for k in range(5):
                row = np.int64(coef[k, 0])
                for a in range(4):
                    normal[k, a] = coef[k, 1] * w2c[row, a] + coef[k, 2] * w2c[2, a]
            m = 0
            for r in range(run_centre.shape[0]):
                outside = False
                for k in range(5):
                    reach = abs(normal[k, 3])  # bound on the terms, for a rounding allowance
                    value = normal[k, 3]
                    for a in range(3):
                        value += normal[k, a] * run_centre[r, a] + abs(normal[k, a]) * run_half[r, a]
                        reach += abs(normal[k, a]) * (abs(run_centre[r, a]) + run_half[r, a])
                    if value < -1e-9 * reach:  # NaN box: never
                        outside = True
                        break
                if outside:
                    continue
                for i in range(r * run_size, min(points.shape[0], (r + 1) * run_size)):
                    px, py, pz = points[i, 0], points[i, 1], points[i, 2]
                    z = px * w2c[2, 0] + py * w2c[2, 1] + pz * w2c[2, 2] + w2c[2, 3]
                    if not z > 0:  # also drops NaN
                        continue
                    x = px * w2c[0, 0] + py * w2c[0, 1] + pz * w2c[0, 2] + w2c[0, 3]
                    u = np.round(x * fx / z + cx)  # np.round: half to even, as torch.round
                    if not (u >= margin and u < width - margin):
                        continue
                    y = px * w2c[1, 0] + py * w2c[1, 1] + pz * w2c[1, 2] + w2c[1, 3]
                    v = np.round(y * fy / z + cy)
                    if not (v >= margin and v < height - margin):
                        continue
                    ui, vi = np.int64(u), np.int64(v)
                    if use_depth:
                        d = np.float64(depth[vi, ui])
                        if not (d > 0 and abs(d - z) <= threshold * d):
                            continue
                    point_idx[m] = i
                    pixel_idx[m] = vi * width + ui
                    m += 1
            return m

        _KERNELS["project"] = project
    return _KERNELS["project"]


def run_boxes(points: np.ndarray, run_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, 3) centres and half extents of the boxes around points ``r * run_size ... (r + 1) * run_size - 1``
    (finite points only; NaN for a run without one), for :func:`project_kernel`."""
    n = len(points)
    runs = -(-n // run_size)
    coords = np.full((3, runs * run_size), np.nan)  # one row per axis: contiguous reductions
    coords[:, :n] = np.asarray(points, dtype=np.float64).T
    finite = np.isfinite(coords).all(axis=0).reshape(runs, run_size)
    low, high = (bound.T for bound in finite_bounds(coords.reshape(3, runs, run_size), finite))
    empty = ~finite.any(axis=1)
    low[empty], high[empty] = np.nan, np.nan
    return (low + high) / 2, (high - low) / 2


_prefetch = None  # the prefetch intrinsic, a module global once built (see _prefetch_intrinsic)


def _prefetch_intrinsic():
    """Build ``_prefetch(array, flat_index)``, a read prefetch hint (``llvm.prefetch``) for one element's
    cache line, as this module's global ``_prefetch``. A global, not a variable of the kernel builder:
    numba keys its on-disk cache of a closure by the pickled closure variables, and an intrinsic
    defined anew pickles differently in every process, so each process compiled ``add_group`` again
    (1-2.5 s per group size) and appended another entry to the cache."""
    global _prefetch
    if _prefetch is not None:
        return _prefetch
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            data = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]], wraparound=False)
            byte_pointer = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
            # read, highest locality, data cache
            builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(array, index), codegen

    _prefetch = prefetch
    return prefetch


def add_group_kernel():
    """``add_group(lo, hi, block, point_idx, pixel_idx, offsets, widths, heights, tables, map_widths,
    map_heights, total, count)``: for the points ``lo <= i < hi``, each visible (point, pixel) pair of
    a group of F frames adds the nearest row of that frame's (h * w, C) map (pixel centres,
    :func:`sas3d.fusion.accumulate.map_rows`) to ``total[point]`` and 1 to ``count[point]``, where that
    row holds a prediction (some channel != 0; NaN counts).

    Frame f's pairs are ``point_idx[offsets[f]:offsets[f + 1]]`` (ascending points) and the same range
    of ``pixel_idx``; the frame is ``widths[f] x heights[f]``, its map ``tables[f]`` (a tuple of F
    arrays) ``map_widths[f] x map_heights[f]`` cells. Validity is tested on the rows actually read
    (the first nonzero channel ends the scan), never over the whole map.

    Memory-bound: per pair a cold 2 KiB map row (512-d) is read and a 2 KiB sum row read and written.
    So the points are walked in blocks of ``block``: for each block, frame 0's pairs in it, then frame
    1's, ...; each point still receives its frames' rows in frame order (sums bit-identical to one
    frame at a time), but its sum row is fetched from memory once per group while the block's rows stay
    in cache. One frame at a time, the sum rows were half of the add time (512-d, 40k pairs per frame:
    19.5 ms per frame against 10 ms with the sums in cache); a group of 4 frames took 13 ms per frame,
    of 8 frames 10.5 ms. The first lines of both rows two pairs ahead are prefetched (a profile showed
    the stall on each row's first line). Sequential; disjoint ``[lo, hi)`` ranges may run at the same
    time (:class:`sas3d.fusion.overlap.Overlap` shares them between two threads).
    """
    if "add_group" not in _KERNELS:
        import numba

        _prefetch_intrinsic()  # the global _prefetch the kernel calls

        @numba.njit(cache=True, nogil=True)
        def add_group(lo, hi, block, point_idx, pixel_idx, offsets, widths, heights, tables, map_widths, map_heights,
                      total, count):  # pragma: no cover - compiled
            frames = offsets.shape[0] - 1
            cursor = np.empty(frames, dtype=np.int64)
            end = np.empty(frames, dtype=np.int64)
            for f in range(frames):
                run = point_idx[offsets[f]:offsets[f + 1]]
                cursor[f] = offsets[f] + np.searchsorted(run, lo)
                end[f] = offsets[f] + np.searchsorted(run, hi)
            flat_total = total.reshape(-1)
            channels = total.shape[1]
            for q in range(lo, hi, block):
                q_end = min(hi, q + block)
                for f in range(frames):
                    table = tables[f]
                    flat_table = table.reshape(-1)
                    width, height, map_width, map_height = widths[f], heights[f], map_widths[f], map_heights[f]
                    j = cursor[f]
                    stop = end[f]
                    while j < stop and point_idx[j] < q_end:
                        if j + 2 < stop:  # start streaming the cold rows two pairs ahead
                            ahead = pixel_idx[j + 2]
                            va = ahead // width
                            ua = ahead - va * width
                            row_ahead = (((2 * va + 1) * map_height) // (2 * height) * map_width
                                         + ((2 * ua + 1) * map_width) // (2 * width))
                            for c in range(0, min(channels, 64), 16):
                                _prefetch(flat_table, row_ahead * channels + c)
                                _prefetch(flat_total, point_idx[j + 2] * channels + c)
                        pixel = pixel_idx[j]
                        v = pixel // width
                        u = pixel - v * width
                        row = ((2 * v + 1) * map_height) // (2 * height) * map_width + ((2 * u + 1) * map_width) // (2 * width)
                        src = table[row]
                        first = 0
                        while first < channels and src[first] == 0:  # NaN != 0: a NaN is a prediction
                            first += 1
                        if first < channels:
                            i = point_idx[j]
                            count[i] += 1
                            dst = total[i]
                            for c in range(channels):
                                dst[c] += src[c]
                        j += 1
                    cursor[f] = j

        _KERNELS["add_group"] = add_group
    return _KERNELS["add_group"]


def divide_kernel():
    """``divide(total, count) -> bad``: ``total[i] /= max(count[i], 1)`` in place (float32) for the rows
    given (a slice of the running sums); returns how many quotients would not be finite in float16 (NaN,
    inf, or ``|q| >= 65520``, which float16 rounds to inf). One pass instead of the torch divide and
    isfinite passes. Sequential: disjoint row slices run at the same time in
    :class:`sas3d.fusion.overlap.Overlap`.
    """
    if "divide" not in _KERNELS:
        import numba

        @numba.njit(cache=True, nogil=True)
        def divide(total, count):  # pragma: no cover - compiled
            bad = 0
            for i in range(total.shape[0]):
                n = np.float32(max(count[i], 1))
                row = total[i]
                for c in range(row.shape[0]):
                    q = row[c] / n
                    row[c] = q
                    bad += not abs(q) < np.float32(65520.0)
            return bad

        _KERNELS["divide"] = divide
    return _KERNELS["divide"]


__all__ = ["add_group_kernel", "divide_kernel", "project_kernel", "run_boxes"]
