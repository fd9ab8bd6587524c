"""``torch.load`` that runs no code from the file: tensors, numeric numpy arrays and containers only.

OpenScene's released ``.pt`` features and preprocessed ``.pth`` scenes are pickles. We load them
with ``weights_only=True`` (which refuses every global but tensors and containers) and allow in
addition only numpy's array-rebuild function, ``ndarray`` and the numeric ``dtype`` classes
(data, no code), so object arrays and custom classes are refused. Works on numpy 1.26 and 2.x,
for files written under either (they name the rebuild function differently).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from sas3d.errors import InputError

_NUMERIC_DTYPES = ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
# numpy >= 2 pickles name it numpy._core.multiarray._reconstruct, numpy 1.x numpy.core.multiarray.
RECONSTRUCT_NAMES = ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct")


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2 (and the 1.26 alias)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def numpy_safe_globals() -> list:
    """The allowlist for ``torch.serialization.safe_globals``: (object, pickled name) pairs and dtype classes."""
    fn = _reconstruct()
    return [(fn, name) for name in RECONSTRUCT_NAMES] + [
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
    ] + [type(np.dtype(t)) for t in _NUMERIC_DTYPES]  # BUILD of a dtype needs its concrete class allowlisted


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` that only materialises tensors, numeric numpy arrays and plain containers.

    Raises :class:`InputError` if the file needs any other pickled global (a custom class, a
    function): we never execute code from a downloaded file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:  # only scans the pickle opcodes, executes nothing
            allowed = set(RECONSTRUCT_NAMES) | {"numpy.ndarray", "numpy.dtype"}
            names = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        except Exception:
            names = []
        what = f" ({', '.join(names[:5])})" if names else ""
        raise InputError(
            path,
            f"contains pickled Python objects{what} besides tensors and numeric arrays; refusing to load it "
            "(weights-only) because unpickling them would execute code from the file. Re-save it with plain "
            "tensors where you trust it.",
        ) from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file at all
        raise InputError(path, f"not a readable torch file ({type(exc).__name__}: {exc})") from None
