"""Atomic artefact writes: write to a temporary next to the target, then rename it into place.

A killed run therefore never leaves a half-written artefact under the final name. Temporaries
are named ``.<target name>.<host>-<pid>-<random>.sas3d-tmp``: the writer's host and process id
let a later run tell an orphan (its process is gone, e.g. after ``kill -9``) from a write in
progress, and every folder we write into is swept once per process
(:func:`clean_stale_temporaries`). Files and folders are created with the mode the user's umask
gives (``0o666``/``0o777`` minus the umask), like any other program's output, so a lab sharing
a results folder can read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

TEMP_SUFFIX = ".sas3d-tmp"
# Orphans of another host (a shared folder) cannot be checked for a live writer: wait this long.
FOREIGN_STALE_S = 24 * 3600
# Temporaries of sas3d before this scheme (.<name>.XXXXXXXX.tmp, and safetensors' own .tmpXXXXXX)
# carry no writer id; one untouched this long is not being written any more.
LEGACY_STALE_S = 3600
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")
_LEGACY_RE = re.compile(r"^(\..+\.[a-z0-9_]{8}\.tmp|\.tmp[A-Za-z0-9]{6})$")
_swept: set[str] = set()


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_name(target: str) -> str:
    """A fresh temporary name for ``target`` (a file or folder name) in the same folder."""
    return f".{target}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never claim a temporary
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(entry: os.DirEntry, now: float) -> bool:
    m = _TEMP_RE.match(entry.name)
    try:
        age = now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if m is None:
        return bool(_LEGACY_RE.match(entry.name)) and age > LEGACY_STALE_S and _looks_like_our_legacy(entry)
    pid = int(m.group("pid"))
    if m.group("host") != _host_tag():
        return age > FOREIGN_STALE_S
    return pid != os.getpid() and not _process_alive(pid)


def _looks_like_our_legacy(entry: os.DirEntry) -> bool:
    """Old-style ``.tmpXXXXXX`` names are common: only claim those holding a safetensors header."""
    if not entry.name.startswith(".tmp"):
        return True  # .<name>.XXXXXXXX.tmp: sas3d's own former pattern
    try:
        with open(entry.path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 32)


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries in ``folder`` whose writer is gone; returns what was removed.

    A temporary of a process on this host that no longer exists is removed at once; one from
    another host after :data:`FOREIGN_STALE_S`; a pre-scheme temporary after :data:`LEGACY_STALE_S`.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(".") or not _is_stale(entry, now):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass  # not ours to remove (permissions), or another run removed it first
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        clean_stale_temporaries(folder)


def make_temp_dir(parent: str | Path, target: str) -> Path:
    """Create an empty temporary folder in ``parent`` for building ``parent/target``, swept like files."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(parent)
    path = parent / temp_name(target)
    path.mkdir(mode=0o777)  # the umask applies
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary exists (empty, umask mode) when the block starts; writers may reopen or replace it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    tmp_path = path.parent / temp_name(path.name)
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
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


def read_json_object(path: str | Path, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``, or an InputError naming the file (unreadable, not JSON, not an object)."""
    from sas3d.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable JSON file ({what}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object ({what}), got {type(data).__name__}")
    return data


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
    """Save torch tensors with JSON metadata (config etc.) under the ``sas3d`` metadata key.

    Serialised in memory and written through :func:`atomic_path`: ``safetensors.torch.save_file``
    would write its own hidden ``.tmpXXXXXX`` (mode 0600) that a kill leaves behind.
    """
    from safetensors.torch import save

    meta = {METADATA_KEY: json.dumps(dict(metadata or {}), default=_json_default)}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    write_bytes_atomic(path, save(tensors, metadata=meta))


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
