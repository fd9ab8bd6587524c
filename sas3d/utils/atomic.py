"""Atomic artefact writes: write to a temp file in the target folder, then rename.

A killed run therefore never leaves a half-written artefact under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and Paths turn up in configs and metrics.
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


METADATA_KEY = "sas3d"


def save_safetensors_atomic(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    """Save torch tensors with JSON metadata (config etc.) under the ``sas3d`` metadata key."""
    from safetensors.torch import save_file

    meta = {METADATA_KEY: json.dumps(dict(metadata or {}), default=_json_default)}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path: str | Path) -> tuple[dict, dict]:
    """Return ``(tensors, metadata)`` from a file written by :func:`save_safetensors_atomic`."""
    from safetensors import safe_open

    from sas3d.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            raw = (f.metadata() or {}).get(METADATA_KEY, "{}")
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise InputError(path, f"not a readable safetensors file ({exc})") from exc
    return tensors, json.loads(raw)
