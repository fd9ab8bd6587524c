"""Superpoints: Felzenszwalb-Huttenlocher graph segmentation on surface normals.

Meshes follow ScanNet's ``Segmentator/segmentator.cpp`` (the tool that made ScanNet's
``*.segs.json``), which SAS/OpenScene use as superpoints:

* vertex normal = running mean of the unit normals of the faces around the vertex (not
  re-normalised, not area weighted -- as the reference does);
* every face contributes its three directed edges (a, b): (i1, i2), (i1, i3), (i3, i2);
* edge weight ``w = 1 - n_a . n_b``, squared when the edge is convex (``n_b . (p_b - p_a) > 0``),
  so smoothly curved convex surfaces are not cut;
* edges sorted by weight; components A, B are joined when ``w <= Int(A) + k/|A|`` and likewise
  for B (``Int`` = weight of the last merge, i.e. the largest MST edge);
* a second pass over the sorted edges joins any component smaller than ``min_size``.

Point clouds without faces use the same algorithm on a k-nearest-neighbour graph with PCA normals.
PCA normals have no consistent sign, so the weight there is ``1 - |n_a . n_b|`` and no convexity
test is made. Outdoor (nuScenes) scans use one superpoint per point (reference).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from sas3d.config import to_dict
from sas3d.errors import InputError
from sas3d.scene.types import Scene


@dataclass
class SuperpointConfig:
    """Parameters of the superpoint segmentation."""

    k_threshold: float = 0.01  # ScanNet segmentator default kThresh (SAS/OpenScene superpoints)
    min_size: int = 60  # official SAS code's segmentator setting: 60 vertices (the segmentator CLI default is 20)
    knn: int = 10  # point clouds: graph neighbours per point (our choice; no reference value)
    normal_knn: int = 16  # point clouds: neighbours for the PCA normal (our choice)
    per_point_kinds: tuple[str, ...] = ("nuscenes",)  # SAS Sec. 3.5: every nuScenes point is its own superpoint


def mesh_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Vertex normals as ScanNet's segmentator computes them: mean of incident unit face normals."""
    from sas3d.geometry.raster import face_normals

    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int64)
    # Degenerate faces give NaN in the reference; a zero normal keeps the vertex normals usable.
    fn = face_normals(v, f)
    sums = np.zeros_like(v)
    counts = np.zeros(len(v), dtype=np.float32)
    for c in range(3):
        np.add.at(sums, f[:, c], fn)
        np.add.at(counts, f[:, c], 1.0)
    return sums / np.maximum(counts, 1.0)[:, None]


def mesh_edges(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed mesh edges (3 per face, reference order) and their convexity-aware weights."""
    f = np.asarray(faces, dtype=np.int64)
    a = np.stack([f[:, 0], f[:, 0], f[:, 2]], axis=1).reshape(-1)
    b = np.stack([f[:, 1], f[:, 2], f[:, 1]], axis=1).reshape(-1)
    v = np.asarray(vertices, dtype=np.float32)
    n = np.asarray(normals, dtype=np.float32)
    d = v[b] - v[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
    dot = np.einsum("ij,ij->i", n[a], n[b])
    convex = np.einsum("ij,ij->i", n[b], d) > 0
    w = (1.0 - dot).astype(np.float32)
    w = np.where(convex, w * w, w).astype(np.float32)
    return a, b, w


@numba.njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def _segment_sorted(num_vertices: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, c: float, min_size: int) -> np.ndarray:
    parent = np.arange(num_vertices)
    rank = np.zeros(num_vertices, dtype=np.int64)
    size = np.ones(num_vertices, dtype=np.int64)
    threshold = np.full(num_vertices, c, dtype=np.float64)
    for i in range(a.shape[0]):
        ra = _find(parent, a[i])
        rb = _find(parent, b[i])
        if ra != rb and w[i] <= threshold[ra] and w[i] <= threshold[rb]:
            root = _join(parent, rank, size, ra, rb)
            threshold[root] = w[i] + c / size[root]
    for i in range(a.shape[0]):
        ra = _find(parent, a[i])
        rb = _find(parent, b[i])
        if ra != rb and (size[ra] < min_size or size[rb] < min_size):
            _join(parent, rank, size, ra, rb)
    out = np.empty(num_vertices, dtype=np.int64)
    for q in range(num_vertices):
        out[q] = _find(parent, q)
    return out


@numba.njit(cache=True)
def _join(parent: np.ndarray, rank: np.ndarray, size: np.ndarray, x: int, y: int) -> int:
    if rank[x] > rank[y]:
        parent[y] = x
        size[x] += size[y]
        return x
    parent[x] = y
    size[y] += size[x]
    if rank[x] == rank[y]:
        rank[y] += 1
    return y


def segment_graph(num_vertices: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, k_threshold: float, min_size: int) -> np.ndarray:
    """Felzenszwalb segmentation of a weighted graph -> (num_vertices,) int64 consecutive segment ids.

    Ids are numbered in order of each segment's first vertex, so the result is deterministic.
    """
    order = np.argsort(np.asarray(w, dtype=np.float32), kind="stable")
    roots = _segment_sorted(
        int(num_vertices),
        np.ascontiguousarray(np.asarray(a, dtype=np.int64)[order]),
        np.ascontiguousarray(np.asarray(b, dtype=np.int64)[order]),
        np.ascontiguousarray(np.asarray(w, dtype=np.float32)[order]),
        float(k_threshold),
        int(min_size),
    )
    return relabel_consecutive(roots)


def relabel_consecutive(ids: np.ndarray) -> np.ndarray:
    """Map arbitrary segment ids to 0..S-1, numbered by first occurrence."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def mesh_superpoints(vertices: np.ndarray, faces: np.ndarray, cfg: SuperpointConfig | None = None) -> np.ndarray:
    """ScanNet-segmentator superpoints of a triangle mesh -> (N,) int64 ids 0..S-1."""
    cfg = cfg or SuperpointConfig()
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices (N,3) and faces (F,3), got {vertices.shape} and {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("face indices out of range")
    normals = mesh_normals(vertices, faces)
    a, b, w = mesh_edges(vertices, faces, normals)
    return segment_graph(len(vertices), a, b, w, cfg.k_threshold, cfg.min_size)


def pca_normals(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Unit normals (sign arbitrary): smallest-eigenvalue eigenvector of each neighbourhood covariance."""
    nb = points[neighbours]  # (N, k, 3)
    centred = nb - nb.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", centred, centred)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    return vecs[:, :, 0].astype(np.float32)


def cloud_superpoints(points: np.ndarray, cfg: SuperpointConfig | None = None) -> np.ndarray:
    """Superpoints of a point cloud without faces: Felzenszwalb on a kNN graph with PCA normals."""
    from scipy.spatial import cKDTree

    cfg = cfg or SuperpointConfig()
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"expected points (N,3), got {pts.shape}")
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(max(cfg.knn, cfg.normal_knn) + 1, n)
    _, idx = cKDTree(pts).query(pts, k=k, workers=-1)
    idx = idx.reshape(n, k)
    normals = pca_normals(pts, idx[:, : min(cfg.normal_knn + 1, k)])
    nbrs = idx[:, 1 : min(cfg.knn + 1, k)]  # column 0 is the point itself
    a = np.repeat(np.arange(n), nbrs.shape[1])
    b = nbrs.reshape(-1)
    w = (1.0 - np.abs(np.einsum("ij,ij->i", normals[a], normals[b]))).astype(np.float32)
    return segment_graph(n, a, b, w, cfg.k_threshold, cfg.min_size)


def _cache_key(scene: Scene, cfg: SuperpointConfig) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(to_dict(cfg), sort_keys=True).encode())
    h.update(np.ascontiguousarray(scene.points, dtype=np.float32).tobytes())
    if scene.faces is not None:
        h.update(np.ascontiguousarray(scene.faces, dtype=np.int64).tobytes())
    h.update(scene.kind.encode())
    return h.hexdigest()


def superpoint_cache_path(scene: Scene, cfg: SuperpointConfig, cache: Path) -> Path:
    """Cache file for ``scene`` under folder ``cache``: keyed by scene name, geometry and config."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in scene.name)
    return Path(cache) / f"superpoints_{safe}_{_cache_key(scene, cfg)}.npy"


def scene_superpoints(scene: Scene, cfg: SuperpointConfig | None = None, cache: Path | None = None) -> np.ndarray:
    """Superpoints of a scene -> (N,) int64: mesh segmentation when it has faces, kNN graph otherwise,
    one per point for outdoor kinds. ``cache`` is a folder; results are stored there as ``.npy``
    keyed by scene name, a hash of its geometry and the config, and re-used on the next call."""
    from sas3d.utils.atomic import atomic_path

    cfg = cfg or SuperpointConfig()
    path = superpoint_cache_path(scene, cfg, cache) if cache is not None else None
    if path is not None and path.is_file():
        try:
            sp = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"unreadable superpoint cache ({exc}); delete it to recompute") from exc
        if sp.shape == (scene.num_points,):
            return sp.astype(np.int64)
    if scene.kind in cfg.per_point_kinds:
        sp = np.arange(scene.num_points, dtype=np.int64)
    elif scene.faces is not None and len(scene.faces):
        sp = mesh_superpoints(scene.points, scene.faces, cfg)
    else:
        sp = cloud_superpoints(scene.points, cfg)
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, sp, allow_pickle=False)
    return sp
