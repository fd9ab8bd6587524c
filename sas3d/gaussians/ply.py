"""Read and write 3D Gaussian Splatting PLY files (the ``plyfile`` library does the PLY parsing).

Layout written by the reference 3DGS code (``GaussianModel.save_ply``), gsplat's exporter and
nerfstudio's ``ns-export gaussian-splat``: one ``vertex`` element with float properties
``x y z [nx ny nz] f_dc_0..2 [f_rest_0..3M-1] opacity scale_0..2 rot_0..3``. Stored values are raw:
opacity is a logit (sigmoid at use), scales are logs (exp at use), ``rot`` an unnormalised
quaternion (w, x, y, z), ``f_rest`` the higher SH bands channel-major (all M coefficients of red,
then green, then blue; M = 3, 8 or 15 for degree 1, 2, 3). Normals are optional (zeros in 3DGS) and
ignored; property order does not matter; any numeric type is accepted. Exports that carry
``red green blue`` instead of ``f_dc`` (some viewers' conversions) are read too.
An optional integer ``label`` property holds per-Gaussian ground truth (scenes built from a
labelled mesh); other readers ignore it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.gaussians.model import SH_C0, GaussianScene
from sas3d.utils.atomic import atomic_path

REQUIRED = ("x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
DC = ("f_dc_0", "f_dc_1", "f_dc_2")
RGB = ("red", "green", "blue")
_REST = re.compile(r"f_rest_(\d+)$")
_OPACITY_EPS = 1e-6  # opacities are clamped to (eps, 1 - eps) before the logit is written


def read_gaussian_ply(path: str | Path, name: str | None = None) -> GaussianScene:
    """A :class:`GaussianScene` from a 3DGS PLY; InputError naming the file for anything malformed."""
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "Gaussian PLY not found")
    try:
        ply = PlyData.read(str(path))
    except (PlyParseError, OSError, ValueError, TypeError) as exc:
        raise InputError(path, f"cannot parse PLY ({exc})") from None
    if "vertex" not in ply:
        raise InputError(path, f"PLY has no 'vertex' element (elements: {[e.name for e in ply.elements]})")
    v = ply["vertex"].data
    props = set(v.dtype.names or ())
    missing = [p for p in REQUIRED if p not in props]
    if not set(DC) <= props and not set(RGB) <= props:
        missing += [p for p in DC if p not in props]
    if missing:
        raise InputError(path, f"not a 3D Gaussian Splatting PLY: vertex properties {missing} are missing "
                               f"(has {sorted(props)[:12]}{' ...' if len(props) > 12 else ''}); expected "
                               "x y z f_dc_0..2 opacity scale_0..2 rot_0..3 as written by 3DGS / gsplat / splatfacto")
    n = len(v)
    if n == 0:
        raise InputError(path, "PLY has zero Gaussians")

    def cols(names) -> np.ndarray:
        return np.stack([np.asarray(v[p], dtype=np.float64) for p in names], axis=1)

    means, log_scales, quat = cols(("x", "y", "z")), cols(("scale_0", "scale_1", "scale_2")), cols(("rot_0", "rot_1", "rot_2", "rot_3"))
    logits = np.asarray(v["opacity"], dtype=np.float64)
    dc = cols(DC) if set(DC) <= props else (cols(RGB) / 255.0 - 0.5) / SH_C0
    for what, arr in (("x/y/z", means), ("scale", log_scales), ("rot", quat), ("opacity", logits), ("f_dc/colour", dc)):
        bad = ~np.isfinite(arr).reshape(n, -1).all(axis=1)
        if bad.any():
            raise InputError(path, f"{int(bad.sum())} Gaussians have non-finite {what} values (first: vertex {int(np.argmax(bad))})")
    norm = np.linalg.norm(quat, axis=1)
    if (norm == 0).any():
        raise InputError(path, f"{int((norm == 0).sum())} Gaussians have an all-zero rotation quaternion (first: vertex {int(np.argmax(norm == 0))})")
    rest = _read_rest(path, v, props, n)
    labels = np.asarray(v["label"], dtype=np.int64) if "label" in props else None
    return GaussianScene(
        name=name or path.stem,
        means=means.astype(np.float32),
        scales=np.exp(log_scales).astype(np.float32),
        rotations=(quat / norm[:, None]).astype(np.float32),
        opacities=(1.0 / (1.0 + np.exp(-logits))).astype(np.float32),
        sh_dc=dc.astype(np.float32),
        sh_rest=rest,
        labels=labels,
        label_set="scannet20" if labels is not None else None,
        source=path,
    )


def _read_rest(path: Path, v: np.ndarray, props: set, n: int) -> np.ndarray | None:
    idx = sorted(int(m.group(1)) for p in props if (m := _REST.match(p)))
    if not idx:
        return None
    if idx != list(range(len(idx))) or len(idx) % 3 or len(idx) // 3 not in (3, 8, 15):
        raise InputError(path, f"f_rest properties must be f_rest_0..f_rest_{{3M-1}} with M = 3, 8 or 15 (SH degree 1-3); "
                               f"got {len(idx)} with indices {idx[:3]}..{idx[-1]}")
    flat = np.stack([np.asarray(v[f"f_rest_{i}"], dtype=np.float32) for i in idx], axis=1)
    if not np.isfinite(flat).all():
        raise InputError(path, "f_rest (higher SH bands) has non-finite values")
    m = len(idx) // 3
    return np.ascontiguousarray(flat.reshape(n, 3, m).transpose(0, 2, 1))  # channel-major -> (N, M, 3)


def write_gaussian_ply(path: str | Path, scene: GaussianScene) -> Path:
    """Write ``scene`` in the reference 3DGS layout (binary little-endian float32, atomically)."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    n = scene.num_gaussians
    m = 0 if scene.sh_rest is None else scene.sh_rest.shape[1]
    names = ["x", "y", "z", "nx", "ny", "nz", *DC, *[f"f_rest_{i}" for i in range(3 * m)], "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    opacity = np.clip(np.asarray(scene.opacities, np.float64), _OPACITY_EPS, 1 - _OPACITY_EPS)
    parts = [scene.means, np.zeros((n, 3)), scene.sh_dc]
    if m:
        parts.append(np.asarray(scene.sh_rest).transpose(0, 2, 1).reshape(n, 3 * m))  # (N, M, 3) -> channel-major
    parts += [np.log(opacity / (1 - opacity))[:, None], np.log(np.asarray(scene.scales, np.float64)), scene.rotations]
    values = np.concatenate([np.asarray(p, dtype=np.float32).reshape(n, -1) for p in parts], axis=1)
    dtype = [(name, "f4") for name in names]
    if scene.labels is not None:
        dtype.append(("label", "u2"))
    rec = np.empty(n, dtype=dtype)
    for i, name in enumerate(names):
        rec[name] = values[:, i]
    if scene.labels is not None:
        rec["label"] = np.clip(scene.labels, 0, 65535)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(rec, "vertex")], byte_order="<").write(str(tmp))
    return path
