"""PLY reading and writing with numpy only (ascii, binary little/big endian).

The reader handles vertex properties of any scalar type and a face element with a
``vertex_indices``/``vertex_index`` list. All-triangle meshes (ScanNet: 127k faces) are parsed
with one vectorised numpy view; only polygon meshes fall back to a per-face loop (fan
triangulation). The writer emits binary little endian with optional extra per-vertex
properties (labels, superpoint ids, scalars), which MeshLab and CloudCompare read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.utils.atomic import atomic_path

# PLY scalar type names (both spellings) -> numpy kind/size code (byte order added per file).
_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
# numpy dtype -> PLY name written by write_ply (PLY has no 64-bit ints: they are range-checked to int32).
_WRITE_TYPES = {
    np.dtype("int8"): "char", np.dtype("uint8"): "uchar",
    np.dtype("int16"): "short", np.dtype("uint16"): "ushort",
    np.dtype("int32"): "int", np.dtype("uint32"): "uint",
    np.dtype("float32"): "float", np.dtype("float64"): "double",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_FACE_LIST_NAMES = ("vertex_indices", "vertex_index")


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


@dataclass
class _Property:
    name: str
    dtype: str  # numpy code without byte order
    count_dtype: str | None = None  # set for list properties


@dataclass
class _Element:
    name: str
    count: int
    props: list[_Property]


def _parse_header(path: Path, raw: bytes) -> tuple[str, list[_Element], list[str], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise InputError(path, "not a PLY file (missing 'ply' magic or 'end_header')")
    body_start = raw.find(b"\n", end)
    if body_start < 0:
        raise InputError(path, "truncated PLY: nothing after 'end_header'")
    body_start += 1
    fmt = None
    elements: list[_Element] = []
    comments: list[str] = []
    for lineno, line in enumerate(raw[:end].decode("ascii", errors="replace").splitlines()[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        try:
            if key == "format":
                fmt = parts[1]
                if fmt not in _FORMATS:
                    raise InputError(path, f"unsupported PLY format {fmt!r} (line {lineno})")
            elif key in ("comment", "obj_info"):
                comments.append(line.partition(" ")[2])
            elif key == "element":
                elements.append(_Element(parts[1], int(parts[2]), []))
            elif key == "property":
                if not elements:
                    raise InputError(path, f"PLY header: property before any element (line {lineno})")
                if parts[1] == "list":
                    elements[-1].props.append(_Property(parts[4], _PLY_TYPES[parts[3]], _PLY_TYPES[parts[2]]))
                else:
                    elements[-1].props.append(_Property(parts[2], _PLY_TYPES[parts[1]]))
            else:
                raise InputError(path, f"PLY header: unknown keyword {key!r} (line {lineno})")
        except (IndexError, ValueError, KeyError) as exc:
            raise InputError(path, f"PLY header: cannot parse line {lineno} {line!r} ({exc})") from None
    if fmt is None:
        raise InputError(path, "PLY header has no 'format' line")
    return fmt, elements, comments, body_start


def _faces_from_lists(lists: list[np.ndarray]) -> np.ndarray:
    """Fan-triangulate polygons (general, slow path)."""
    tris = []
    for poly in lists:
        if len(poly) < 3:
            continue
        for k in range(1, len(poly) - 1):
            tris.append((poly[0], poly[k], poly[k + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _read_binary(path: Path, raw: bytes, offset: int, order: str, elements: list[_Element]):
    out: dict[str, dict[str, np.ndarray]] = {}
    faces = None
    for el in elements:
        lists = [p for p in el.props if p.count_dtype is not None]
        if not lists:
            dtype = np.dtype([(p.name, order + p.dtype) for p in el.props])
            need = dtype.itemsize * el.count
            if len(raw) - offset < need:
                raise InputError(path, f"truncated PLY: element '{el.name}' needs {need} bytes, file has {len(raw) - offset} left")
            arr = np.frombuffer(raw, dtype=dtype, count=el.count, offset=offset)
            offset += need
            out[el.name] = {p.name: arr[p.name].astype(arr.dtype[p.name].newbyteorder("=")) for p in el.props}
            continue
        # Fast path: every list holds 3 entries -> one fixed-size record per row.
        fields = []
        for p in el.props:
            if p.count_dtype is None:
                fields.append((p.name, order + p.dtype))
            else:
                fields += [(p.name + "#n", order + p.count_dtype), (p.name, order + p.dtype, (3,))]
        dtype = np.dtype(fields)
        fast = None
        if len(raw) - offset >= dtype.itemsize * el.count:
            cand = np.frombuffer(raw, dtype=dtype, count=el.count, offset=offset)
            if all((cand[p.name + "#n"] == 3).all() for p in lists):
                fast = cand
        if fast is not None:
            offset += dtype.itemsize * el.count
            values = {p.name: fast[p.name] for p in el.props}
        else:
            values, offset = _read_binary_rows(path, raw, offset, order, el)
        out[el.name] = values
        if el.name == "face":
            faces = _face_array(values, fast is not None)
    return out, faces


def _read_binary_rows(path: Path, raw: bytes, offset: int, order: str, el: _Element):
    """Row-by-row parse for elements with variable-length lists (polygon meshes)."""
    values: dict[str, list] = {p.name: [] for p in el.props}
    try:
        for _ in range(el.count):
            for p in el.props:
                if p.count_dtype is None:
                    v = np.frombuffer(raw, order + p.dtype, 1, offset)[0]
                    offset += np.dtype(p.dtype).itemsize
                else:
                    n = int(np.frombuffer(raw, order + p.count_dtype, 1, offset)[0])
                    offset += np.dtype(p.count_dtype).itemsize
                    v = np.frombuffer(raw, order + p.dtype, n, offset)
                    offset += n * np.dtype(p.dtype).itemsize
                values[p.name].append(v)
    except ValueError:
        raise InputError(path, f"truncated PLY: element '{el.name}' ends early") from None
    return values, offset


def _face_array(values: dict, uniform: bool) -> np.ndarray | None:
    name = next((n for n in _FACE_LIST_NAMES if n in values), None)
    if name is None:
        return None
    if uniform:
        return np.asarray(values[name], dtype=np.int64).reshape(-1, 3)
    return _faces_from_lists(values[name])


def _read_ascii(path: Path, raw: bytes, offset: int, elements: list[_Element]):
    lines = raw[offset:].decode("ascii", errors="replace").splitlines()
    lines = [ln for ln in lines if ln.strip()]
    out: dict[str, dict[str, np.ndarray]] = {}
    faces = None
    pos = 0
    for el in elements:
        rows = lines[pos : pos + el.count]
        if len(rows) < el.count:
            raise InputError(path, f"truncated PLY: element '{el.name}' has {len(rows)} of {el.count} rows")
        pos += el.count
        has_list = any(p.count_dtype is not None for p in el.props)
        ncols = len(el.props) + 3 * sum(p.count_dtype is not None for p in el.props)
        table = None
        if el.count and (not has_list or all(len(r.split()) == ncols for r in rows)):
            try:
                table = np.array(" ".join(rows).split(), dtype=np.float64).reshape(el.count, ncols)
            except ValueError:
                table = None
            if table is None and not has_list:
                raise InputError(path, f"PLY element '{el.name}': rows are not {ncols} numbers each")
        values: dict = {}
        if table is not None or el.count == 0:
            col = 0
            uniform = True
            for p in el.props:
                if el.count == 0:
                    values[p.name] = np.zeros((0, 3) if p.count_dtype else 0, p.dtype)
                elif p.count_dtype is None:
                    values[p.name] = table[:, col].astype(p.dtype)
                    col += 1
                else:
                    uniform &= bool((table[:, col] == 3).all())
                    values[p.name] = table[:, col + 1 : col + 4].astype(p.dtype)
                    col += 4
            if uniform:
                out[el.name] = values
                if el.name == "face":
                    faces = _face_array(values, True)
                continue
        values = {p.name: [] for p in el.props}
        for r in rows:
            tok = r.split()
            i = 0
            try:
                for p in el.props:
                    if p.count_dtype is None:
                        values[p.name].append(float(tok[i]))
                        i += 1
                    else:
                        n = int(tok[i])
                        values[p.name].append(np.array(tok[i + 1 : i + 1 + n], dtype=np.float64).astype(p.dtype))
                        i += 1 + n
            except (IndexError, ValueError):
                raise InputError(path, f"PLY element '{el.name}': malformed row {r!r}") from None
        out[el.name] = values
        if el.name == "face":
            faces = _face_array(values, False)
    return out, faces


def read_ply(path: str | Path) -> PlyData:
    """Read a PLY file (ascii or binary). Raises InputError for unreadable/truncated files or bad faces."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read PLY file ({exc.strerror or exc})") from None
    fmt, elements, comments, offset = _parse_header(path, raw)
    vertex_el = next((e for e in elements if e.name == "vertex"), None)
    if vertex_el is None:
        raise InputError(path, "PLY has no 'vertex' element")
    if any(p.count_dtype is not None for p in vertex_el.props):
        raise InputError(path, "PLY vertex element has list properties (not a point cloud / mesh)")
    if fmt == "ascii":
        data, faces = _read_ascii(path, raw, offset, elements)
    else:
        data, faces = _read_binary(path, raw, offset, _FORMATS[fmt], elements)
    vertex = data["vertex"]
    n = vertex_el.count
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= n):
        raise InputError(path, f"PLY face indices out of range [0, {n}) (min {faces.min()}, max {faces.max()})")
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
    order = _FORMATS[format] or "<"
    vdtype = np.dtype([(name, order + arr.dtype.str[1:]) for name, arr in columns])
    vrec = np.empty(n, dtype=vdtype)
    for name, arr in columns:
        vrec[name] = arr

    header = ["ply", f"format {format} 1.0"]
    if comment:
        header.append(f"comment {comment}")
    header.append(f"element vertex {n}")
    header += [f"property {_WRITE_TYPES[arr.dtype]} {name}" for name, arr in columns]
    frec = None
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {faces.shape}")
        if len(faces) and (faces.min() < 0 or faces.max() >= n):
            raise ValueError("face indices out of range")
        frec = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("v", order + "i4", (3,))]))
        frec["n"] = 3
        frec["v"] = faces
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if _FORMATS[format] is None:
            fmts = ["%d" if arr.dtype.kind in "iu" else ("%.9g" if arr.dtype.itemsize == 4 else "%.17g") for _, arr in columns]
            np.savetxt(f, np.stack([arr.astype(np.float64) for _, arr in columns], axis=1), fmt=fmts)
            if frec is not None:
                np.savetxt(f, np.concatenate([np.full((len(faces), 1), 3), faces], axis=1), fmt="%d")
        else:
            f.write(vrec.tobytes())
            if frec is not None:
                f.write(frec.tobytes())


def _writable(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype in _WRITE_TYPES:
        return arr
    if arr.dtype.kind in "iu":
        info = np.iinfo(np.int32)
        if len(arr) and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"vertex property {name!r} does not fit in a PLY int (int32)")
        return arr.astype(np.int32)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    raise ValueError(f"vertex property {name!r} has unsupported dtype {arr.dtype}")
