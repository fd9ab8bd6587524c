"""Bring-your-own proposals: read Mask3D / OpenMask3D outputs and the ScanNet benchmark instance format.

Formats (never unpickling code: ``.pt`` goes through :func:`sas3d.evaluate.interop.safe_torch_load`,
``.npz`` / ``.npy`` through numpy with ``allow_pickle=False``):

* ScanNet benchmark instance text (what Mask3D's ``export`` writes): ``<scene>.txt`` with lines
  ``<mask file> <label id> <confidence>``, mask paths relative to the ``.txt``'s folder, each mask
  file one integer per vertex (non-zero = in the mask); label ids are NYU40 ids.
* OpenMask3D class-agnostic masks ``<scene>_masks.pt``: a (N, P) array, one column per mask (no
  scores: each gets 1.0, as OpenMask3D's evaluation does).
* a dict (``.pt``) or ``.npz`` with the keys of OpenMask3D / Mask3D's prediction dicts:
  ``pred_masks`` (N, P), optional ``pred_scores`` (P,) and ``pred_classes`` (P,); or ``masks``
  (P, N) or (N, P), ``scores``, ``labels``.
* a ``.npy`` (N, P) / (P, N) mask array, or (N,) per-point instance ids (0 or negative = none).

Which axis is the point axis is decided by the scene's point count; a square array keeps its
format's convention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sas3d.errors import InputError
from sas3d.instances.types import Proposals, masks_from_dense, masks_from_ids, masks_from_indices

MASK_KEYS = ("pred_masks", "masks")
SCORE_KEYS = ("pred_scores", "scores")
LABEL_KEYS = ("pred_classes", "labels", "classes")


def load_proposals(path: str | Path, num_points: int) -> Proposals:
    """Read proposals for a scene of ``num_points`` points from any supported file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "proposal file not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_benchmark_predictions(path, num_points)
    if suffix in (".pt", ".pth"):
        from sas3d.evaluate.interop import safe_torch_load

        return _from_object(path, safe_torch_load(path), num_points, "pt")
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a readable .npz of plain arrays ({exc})") from None
        return _from_object(path, data, num_points, "npz")
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a readable .npy of a plain array ({exc})") from None
        return _from_object(path, arr, num_points, "npy")
    raise InputError(path, "unknown proposal format: use a ScanNet benchmark .txt, a .pt (OpenMask3D masks / prediction dict), .npz or .npy")


def _array(path: Path, obj: Any, what: str) -> np.ndarray:
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().float().numpy() if obj.dtype.is_floating_point else obj.detach().cpu().numpy()
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "biuf":
        raise InputError(path, f"'{what}' is a {type(obj).__name__}{'' if not isinstance(obj, np.ndarray) else ' of ' + str(obj.dtype)}, expected a numeric array")
    if obj.dtype.kind == "f" and not np.isfinite(obj).all():
        raise InputError(path, f"'{what}' contains NaN or inf")
    return obj


def _orient(path: Path, masks: np.ndarray, num_points: int, points_first: bool, what: str) -> np.ndarray:
    """(P, N) view of a 2-D mask array whose point axis is found from ``num_points``."""
    if masks.ndim != 2:
        raise InputError(path, f"'{what}' has shape {masks.shape}, expected a 2-D (points x masks) array")
    a, b = masks.shape
    if a == num_points and (b != num_points or points_first):
        return masks.T
    if b == num_points:
        return masks
    raise InputError(path, f"'{what}' has shape {masks.shape} but the scene has {num_points} points (neither axis matches)")


def _from_object(path: Path, obj: Any, num_points: int, fmt: str) -> Proposals:
    if isinstance(obj, dict):
        mkey = next((k for k in MASK_KEYS if k in obj), None)
        if mkey is None:
            raise InputError(path, f"no mask array: expected one of the keys {', '.join(MASK_KEYS)}, found {sorted(map(str, obj))[:8]}")
        masks = _orient(path, _array(path, obj[mkey], mkey), num_points, mkey == "pred_masks", mkey)
        skey = next((k for k in SCORE_KEYS if k in obj), None)
        lkey = next((k for k in LABEL_KEYS if k in obj), None)
        scores = _array(path, obj[skey], skey).reshape(-1).astype(np.float64) if skey else np.ones(masks.shape[0])
        labels = _array(path, obj[lkey], lkey).reshape(-1).astype(np.int64) if lkey else None
        for key, arr in ((skey, scores), (lkey, labels)):
            if arr is not None and key is not None and arr.shape[0] != masks.shape[0]:
                raise InputError(path, f"'{key}' has {arr.shape[0]} entries for {masks.shape[0]} masks")
        return Proposals(masks_from_dense(masks), scores, labels, {"source": str(path), "format": f"{fmt} dict"})
    arr = _array(path, obj, "masks")
    if arr.ndim == 1:
        if arr.shape[0] != num_points:
            raise InputError(path, f"per-point instance ids cover {arr.shape[0]} points but the scene has {num_points}")
        uniq, masks = masks_from_ids(arr.astype(np.int64))
        return Proposals(masks, np.ones(len(uniq)), None, {"source": str(path), "format": f"{fmt} instance ids"})
    masks = _orient(path, arr, num_points, True, "masks")  # OpenMask3D saves (N, P)
    return Proposals(masks_from_dense(masks), np.ones(masks.shape[0]), None, {"source": str(path), "format": f"{fmt} masks"})


def read_benchmark_predictions(path: str | Path, num_points: int) -> Proposals:
    """A ScanNet benchmark prediction file (``<mask file> <label id> <confidence>`` lines) -> Proposals with labels."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable text file ({exc})") from None
    rows, labels, scores = [], [], []
    for no, line in enumerate(lines, 1):
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) != 3:
                raise ValueError
            label, conf = int(parts[1]), float(parts[2])
        except ValueError:
            raise InputError(path, f"line {no}: expected '<mask file> <label id> <confidence>', got {line[:80]!r}") from None
        mask_path = path.parent / parts[0]
        if not mask_path.is_file():
            raise InputError(path, f"line {no}: mask file {parts[0]} not found (paths are relative to {path.parent})")
        try:
            mask = np.loadtxt(mask_path, dtype=np.int64, ndmin=1)
        except ValueError:
            raise InputError(mask_path, "expected one integer per line (0 = not in the mask)") from None
        if mask.ndim != 1 or mask.shape[0] != num_points:
            raise InputError(mask_path, f"has {mask.shape[0]} lines but the scene has {num_points} vertices")
        rows.append(np.flatnonzero(mask))
        labels.append(label)
        scores.append(conf)
    return Proposals(masks_from_indices(rows, num_points), np.asarray(scores), np.asarray(labels, dtype=np.int64),
                     {"source": str(path), "format": "scannet benchmark"})


def write_benchmark_predictions(out_dir: str | Path, scene_name: str, masks: Any, label_ids: np.ndarray, scores: np.ndarray) -> Path:
    """Write predictions in the ScanNet benchmark format: ``<out>/<scene>.txt`` + ``<out>/pred_mask/<scene>_<i>.txt``.

    The mask files are written first, the list last (each atomically), so a list never names a missing mask.
    """
    import scipy.sparse as sp

    from sas3d.utils.atomic import write_text_atomic

    out = Path(out_dir)
    m = sp.csr_matrix(masks, dtype=bool)
    lines = []
    for i in range(m.shape[0]):
        col = np.zeros(m.shape[1], dtype=np.uint8)
        col[m.indices[m.indptr[i] : m.indptr[i + 1]]] = 1
        rel = f"pred_mask/{scene_name}_{i:03d}.txt"
        write_text_atomic(out / rel, "\n".join("1" if v else "0" for v in col) + "\n")
        lines.append(f"{rel} {int(label_ids[i])} {float(scores[i]):.6f}")
    target = out / f"{scene_name}.txt"
    write_text_atomic(target, "\n".join(lines) + ("\n" if lines else ""))
    return target
