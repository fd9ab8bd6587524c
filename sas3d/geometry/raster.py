"""CPU triangle rasterizer (numba z-buffer): depth, face id and barycentrics per pixel.

Used to render RGB-D frames from a mesh (``sas3d render-views``, the embedded demo rooms).
Camera convention is the project's: ``pose`` is 4x4 camera-to-world, OpenCV axes (x right,
y down, z forward), metres. Pixel ``(row v, column u)`` is sampled at the image coordinate
``(u, v)`` itself (integer coordinates are pixel centres, as in ScanNet intrinsics and in
``round(fx * x / z + cx)`` projection), so a point projecting to ``(u, v)`` lands in that pixel.

Triangles with any vertex closer than ``near`` are skipped rather than clipped: on the dense
meshes this renders (ScanNet, the demo rooms: edges of a few centimetres) that only removes
surface within a few centimetres of the camera, and it keeps the kernel simple and fast.
Triangles are two-sided (indoor scans are seen from inside and are not consistently oriented).
"""

from __future__ import annotations

import numba
import numpy as np

from sas3d.scene.types import IGNORE_LABEL


@numba.njit(cache=True, nogil=True)
def _raster_kernel(cam_pts, faces, fx, fy, cx, cy, width, height, near, depth, face_id, bary):
    inv_z = np.zeros((height, width), dtype=np.float64)  # z-buffer in 1/z: larger = closer
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        z0, z1, z2 = cam_pts[i0, 2], cam_pts[i1, 2], cam_pts[i2, 2]
        if z0 < near or z1 < near or z2 < near:
            continue
        u0 = fx * cam_pts[i0, 0] / z0 + cx
        v0 = fy * cam_pts[i0, 1] / z0 + cy
        u1 = fx * cam_pts[i1, 0] / z1 + cx
        v1 = fy * cam_pts[i1, 1] / z1 + cy
        u2 = fx * cam_pts[i2, 0] / z2 + cx
        v2 = fy * cam_pts[i2, 1] / z2 + cy
        area = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)
        if abs(area) < 1e-12:
            continue
        umin = max(int(np.ceil(min(u0, u1, u2))), 0)
        umax = min(int(np.floor(max(u0, u1, u2))), width - 1)
        vmin = max(int(np.ceil(min(v0, v1, v2))), 0)
        vmax = min(int(np.floor(max(v0, v1, v2))), height - 1)
        if umin > umax or vmin > vmax:
            continue
        inv_area = 1.0 / area
        iz0, iz1, iz2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
        for v in range(vmin, vmax + 1):
            for u in range(umin, umax + 1):
                # Screen-space barycentrics (edge functions); sign-normalised by the area.
                w0 = ((u1 - u) * (v2 - v) - (u2 - u) * (v1 - v)) * inv_area
                w1 = ((u2 - u) * (v0 - v) - (u0 - u) * (v2 - v)) * inv_area
                w2 = 1.0 - w0 - w1
                if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                    continue
                # 1/z is affine in screen space: this is the perspective-correct depth.
                iz = w0 * iz0 + w1 * iz1 + w2 * iz2
                if iz <= inv_z[v, u]:
                    continue
                inv_z[v, u] = iz
                z = 1.0 / iz
                depth[v, u] = z
                face_id[v, u] = f
                bary[v, u, 0] = w0 * iz0 * z
                bary[v, u, 1] = w1 * iz1 * z
                bary[v, u, 2] = w2 * iz2 * z


def world_to_camera(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Transform (N,3) world points into the camera frame of a 4x4 camera-to-world ``pose``."""
    pose = np.asarray(pose, dtype=np.float64)
    rot, trans = pose[:3, :3], pose[:3, 3]
    return (np.asarray(points, dtype=np.float64) - trans) @ rot


def rasterize(
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    pose: np.ndarray,
    width: int,
    height: int,
    near: float = 0.05,
    return_barycentric: bool = False,
):
    """Render a triangle mesh with a z-buffer.

    Returns ``(depth, face_id)``: depth (H, W) float32 metres along the optical axis (0 where no
    surface), face_id (H, W) int64 (-1 where empty). With ``return_barycentric=True`` also returns
    (H, W, 3) float32 perspective-correct barycentric weights of the hit face's three vertices.
    """
    vertices = np.asarray(vertices)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"need vertices (V,3) and faces (F,3), got {vertices.shape} and {faces.shape}")
    k = np.asarray(intrinsics, dtype=np.float64)
    cam = np.ascontiguousarray(world_to_camera(vertices, pose))
    depth = np.zeros((height, width), dtype=np.float32)
    face_id = np.full((height, width), -1, dtype=np.int64)
    bary = np.zeros((height, width, 3), dtype=np.float32)
    _raster_kernel(cam, faces, k[0, 0], k[1, 1], k[0, 2], k[1, 2], int(width), int(height), float(near), depth, face_id, bary)
    if return_barycentric:
        return depth, face_id, bary
    return depth, face_id


@numba.njit(cache=True, nogil=True)
def _shade_kernel(face_id, faces, vertex_colors, bary, use_bary, out):
    h, w = face_id.shape
    for v in range(h):
        for u in range(w):
            f = face_id[v, u]
            if f < 0:
                continue
            for c in range(3):
                if use_bary:
                    x = (bary[v, u, 0] * vertex_colors[faces[f, 0], c] + bary[v, u, 1] * vertex_colors[faces[f, 1], c]
                         + bary[v, u, 2] * vertex_colors[faces[f, 2], c])
                else:
                    x = (vertex_colors[faces[f, 0], c] + vertex_colors[faces[f, 1], c] + vertex_colors[faces[f, 2], c]) / 3.0
                out[v, u, c] = min(255, max(0, int(x + 0.5)))


def shade(face_id: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray, bary: np.ndarray | None = None,
          background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Per-pixel colour (H, W, 3) uint8 of the hit face: barycentric blend of its vertex colours
    when ``bary`` is given, else the face's mean colour; ``background`` where nothing was hit."""
    out = np.empty(face_id.shape + (3,), dtype=np.uint8)
    out[:] = np.asarray(background, dtype=np.uint8)
    use_bary = bary is not None
    b = np.ascontiguousarray(bary, dtype=np.float32) if use_bary else np.zeros((1, 1, 3), np.float32)
    _shade_kernel(np.ascontiguousarray(face_id, dtype=np.int64), np.ascontiguousarray(faces, dtype=np.int64),
                  np.ascontiguousarray(vertex_colors, dtype=np.float32), b, use_bary, out)
    return out

def pixel_labels(face_id: np.ndarray, faces: np.ndarray, vertex_labels: np.ndarray, bary: np.ndarray | None = None,
                 empty: int = IGNORE_LABEL) -> np.ndarray:
    """Per-pixel label (H, W) int64: the majority label of the hit face's three vertices; with no
    majority, the label of the vertex with the largest barycentric weight (first vertex without
    ``bary``). ``empty`` where nothing was hit."""
    out = np.full(face_id.shape, empty, dtype=np.int64)
    hit = face_id >= 0
    lab = np.asarray(vertex_labels, dtype=np.int64)[np.asarray(faces)[face_id[hit]]]  # (M, 3)
    l0, l1, l2 = lab[:, 0], lab[:, 1], lab[:, 2]
    if bary is None:
        fallback = l0
    else:
        fallback = np.take_along_axis(lab, bary[hit].argmax(axis=1)[:, None], axis=1)[:, 0]
    out[hit] = np.where((l0 == l1) | (l0 == l2), l0, np.where(l1 == l2, l1, fallback))
    return out


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (F, 3) float32 of each triangle (zero for degenerate triangles)."""
    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


@numba.njit(cache=True, nogil=True)
def _headlight_kernel(face_id, normals_cam, fx, fy, cx, cy, ambient, diffuse, out):
    h, w = face_id.shape
    for v in range(h):
        for u in range(w):
            f = face_id[v, u]
            if f < 0:
                continue
            rx, ry = (u - cx) / fx, (v - cy) / fy
            dot = (normals_cam[f, 0] * rx + normals_cam[f, 1] * ry + normals_cam[f, 2]) / np.sqrt(rx * rx + ry * ry + 1.0)
            out[v, u] = ambient + diffuse * abs(dot)


def headlight_shading(face_id: np.ndarray, normals: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray,
                      ambient: float = 0.45, diffuse: float = 0.55) -> np.ndarray:
    """Brightness factor (H, W) float32 for a light at the camera: ``ambient + diffuse * |n . ray|``
    (two-sided); 0 where nothing was hit."""
    k = np.asarray(intrinsics, dtype=np.float64)
    n_cam = np.ascontiguousarray(np.asarray(normals, dtype=np.float64) @ np.asarray(pose, dtype=np.float64)[:3, :3])
    out = np.zeros(face_id.shape, dtype=np.float32)
    _headlight_kernel(np.ascontiguousarray(face_id, dtype=np.int64), n_cam, k[0, 0], k[1, 1], k[0, 2], k[1, 2],
                      float(ambient), float(diffuse), out)
    return out
