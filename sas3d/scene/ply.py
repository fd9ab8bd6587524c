"""PLY reading and writing through the ``plyfile`` library (ascii, binary little/big endian).

:func:`read_ply` returns the vertex properties by name and the faces as triangles: all-triangle
meshes (ScanNet: 127k faces) are memory-mapped in one go (plyfile's ``known_list_len``), polygon
meshes are fan-triangulated. Every plyfile error becomes an :class:`InputError` naming the file.
:func:`write_ply` writes points, colours, triangle faces and extra per-vertex properties (labels,
superpoint ids, scalars), which MeshLab and CloudCompare read, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.utils.atomic import atomic_path

_FORMATS = {"ascii": "=", "binary_little_endian": "<", "binary_big_endian": ">"}
_FACE_LIST_NAMES = ("vertex_indices", "vertex_index")
# PLY has no 64-bit integers: wider ints are range-checked into int32, bools stored as uchar.
_PLY_INT = np.dtype("int32")


@dataclass
class PlyData:
    """Parsed PLY: per-vertex property arrays by name and triangle faces (F, 3) int64 or None."""

    vertex: dict[str, np.ndarray]
    faces: np.ndarray | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def num_vertices(self) -> int:
        return len(next(iter(self.vertex.values()))) if self.vertex else 0

    def points(self) -> np.ndarray:
        """(N, 3) float32 x, y, z."""
        return np.stack([self.vertex[k] for k in ("x", "y", "z")], axis=1).astype(np.float32)

    def colors(self) -> np.ndarray | None:
        """(N, 3) uint8 from red/green/blue (or diffuse_*), None when absent."""
        for names in (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
            if all(n in self.vertex for n in names):
                rgb = np.stack([self.vertex[n] for n in names], axis=1)
                if rgb.dtype.kind == "f":  # some writers store colours as 0..1 floats
                    rgb = np.clip(np.round(rgb * 255.0), 0, 255)
                return rgb.astype(np.uint8)
        return None


def _parse(path: Path, triangles: bool):
    import plyfile

    known = {"face": {name: 3 for name in _FACE_LIST_NAMES}} if triangles else {}
    try:
        return plyfile.PlyData.read(str(path), mmap="c", known_list_len=known)
    except plyfile.PlyElementParseError as exc:
        if triangles and exc.message == "unexpected list length":
            return None  # a polygon mesh: read again without the fixed-length fast path
        where = f"element '{exc.element.name}'" if exc.element is not None else "data"
        if exc.row is not None:
            where += f" row {exc.row}" + (f" of {exc.element.count}" if exc.element is not None else "")
        if "end-of-file" in exc.message:
            raise InputError(path, f"truncated PLY: {where} ends early ({exc.message})") from None
        raise InputError(path, f"malformed PLY: {where}: {exc.message}") from None
    except plyfile.PlyHeaderParseError as exc:
        if exc.message.startswith("expected 'ply'"):
            raise InputError(path, "not a PLY file (missing 'ply' magic)") from None
        raise InputError(path, f"malformed PLY header: {exc}") from None
    except (ValueError, plyfile.PlyParseError) as exc:  # e.g. a binary body read as text
        raise InputError(path, f"malformed PLY ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read PLY file ({exc.strerror or exc})") from None


def _triangles(lists: np.ndarray) -> np.ndarray:
    """(F, 3) int64 from a face list property: fixed-length rows as they are, polygons fan-triangulated."""
    if lists.dtype != object:
        return np.asarray(lists, dtype=np.int64).reshape(-1, 3)
    if all(len(p) == 3 for p in lists):
        return np.asarray(np.stack(lists) if len(lists) else np.zeros((0, 3)), dtype=np.int64).reshape(-1, 3)
    tris = [(p[0], p[k], p[k + 1]) for p in lists for k in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def read_ply(path: str | Path) -> PlyData:
    """Read a PLY file. Raises InputError for unreadable/truncated/malformed files or bad faces."""
    import plyfile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "PLY file not found" if not path.exists() else "not a file")
    ply = _parse(path, triangles=True)
    if ply is None:
        ply = _parse(path, triangles=False)
    names = [el.name for el in ply.elements]
    if "vertex" not in names:
        raise InputError(path, "PLY has no 'vertex' element")
    vertex_el = ply["vertex"]
    if any(isinstance(p, plyfile.PlyListProperty) for p in vertex_el.properties):
        raise InputError(path, "PLY vertex element has list properties (not a point cloud / mesh)")
    # np.array copies out of the memory map, so the file is not held open.
    vertex = {p.name: np.array(vertex_el[p.name]) for p in vertex_el.properties}
    faces = None
    if "face" in names:
        face_el = ply["face"]
        name = next((n for n in _FACE_LIST_NAMES if n in face_el), None)
        if name is not None:
            faces = _triangles(face_el[name])
    n = vertex_el.count
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= n):
        raise InputError(path, f"PLY face indices out of range [0, {n}) (min {faces.min()}, max {faces.max()})")
    comments = list(ply.comments) + list(ply.obj_info)
    return PlyData(vertex=vertex, faces=faces, comments=comments)


def write_ply(
    path: str | Path,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    faces: np.ndarray | None = None,
    vertex_props: dict[str, np.ndarray] | None = None,
    *,
    format: str = "binary_little_endian",
    comment: str | None = None,
) -> None:
    """Write a point cloud / triangle mesh PLY atomically.

    ``points`` (N,3) -> float x,y,z; ``colors`` (N,3) uint8 -> red,green,blue; ``faces`` (F,3) ->
    ``list uchar int vertex_indices``; ``vertex_props`` name -> (N,) array of any integer/float
    dtype (int64/bool are stored as int/uchar after a range check). ``format`` may also be
    ``ascii`` or ``binary_big_endian``.
    """
    import plyfile

    path = Path(path)
    if format not in _FORMATS:
        raise ValueError(f"unknown PLY format {format!r}; use one of {', '.join(_FORMATS)}")
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    n = len(points)
    columns: list[tuple[str, np.ndarray]] = [(k, points[:, i].astype(np.float32)) for i, k in enumerate("xyz")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (n, 3):
            raise ValueError(f"colors must be ({n}, 3), got {colors.shape}")
        columns += [(k, colors[:, i].astype(np.uint8)) for i, k in enumerate(("red", "green", "blue"))]
    for name, arr in (vertex_props or {}).items():
        arr = np.asarray(arr)
        if arr.shape != (n,):
            raise ValueError(f"vertex property {name!r} must have shape ({n},), got {arr.shape}")
        columns.append((name, _writable(name, arr)))
    vrec = np.empty(n, dtype=[(name, arr.dtype) for name, arr in columns])
    for name, arr in columns:
        vrec[name] = arr
    elements = [plyfile.PlyElement.describe(vrec, "vertex")]
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {faces.shape}")
        if len(faces) and (faces.min() < 0 or faces.max() >= n):
            raise ValueError("face indices out of range")
        frec = np.empty(len(faces), dtype=[("vertex_indices", _PLY_INT, (3,))])
        frec["vertex_indices"] = faces
        elements.append(plyfile.PlyElement.describe(frec, "face", len_types={"vertex_indices": "u1"}))
    data = plyfile.PlyData(elements, text=format == "ascii", byte_order=_FORMATS[format],
                           comments=[comment] if comment else [])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        data.write(f)


def _writable(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 4:
        return arr
    if arr.dtype.kind in "iu":
        info = np.iinfo(_PLY_INT)
        if len(arr) and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"vertex property {name!r} does not fit in a PLY int (int32)")
        return arr.astype(_PLY_INT)
    if arr.dtype.kind == "f":
        return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
    raise ValueError(f"vertex property {name!r} has unsupported dtype {arr.dtype}")
