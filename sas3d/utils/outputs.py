"""Checks on a command's output locations, done before any computation.

:func:`check_outputs` refuses, with an :class:`InputError` naming the path:

* an output that is one of the files the command reads (compared by device and inode, so
  symlinks, hard links and other spellings of the path are caught), even with ``overwrite``;
* a file output that is a folder, or a folder output that is a file;
* replacing an existing file of another kind (a PLY where a safetensors file is written, ...),
  or replacing entries of a folder the command did not write before, unless ``overwrite``;
* a location that cannot be written (no permission, a file where a folder is needed);
* two outputs of one command that are the same file.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from sas3d.errors import InputError

KIND_NAMES = {
    "ply": "a PLY file",
    "safetensors": "a safetensors file",
    "json": "a JSON file",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "npy": "a NumPy .npy file",
    "zip": "a zip archive (e.g. a torch .pt file)",
    "text": "a text file",
    "other": "a file of another kind",
}

# A read entry: a file, or a (folder, glob pattern) pair for many files.
Read = Union[str, Path, tuple]


@dataclass(frozen=True)
class Output:
    """Something a command writes.

    ``kind``: a :data:`KIND_NAMES` key for a file, or ``"folder"``. For a folder, ``replaces``
    are glob patterns of the entries the command replaces ("*": all of them) and ``marker`` a file
    the command writes there, which marks a folder it wrote before (so a re-run may replace them).
    """

    path: Path
    kind: str
    replaces: tuple[str, ...] = ()
    marker: str | None = None


def file_kind(path: Path) -> str:
    """Sniff what an existing file is from its first bytes: a :data:`KIND_NAMES` key or ``"empty"``."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        return "empty"
    if head.startswith((b"ply\n", b"ply\r\n")):
        return "ply"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path):
        return "safetensors"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "json"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "other"
    return "text"


def _identities(reads: Iterable[Read], files: bool) -> dict[tuple[int, int], Path]:
    """(st_dev, st_ino) -> path of the folders read and, with ``files``, of every existing file read (symlinks followed)."""
    out: dict[tuple[int, int], Path] = {}
    for entry in reads:
        if isinstance(entry, tuple):
            folder, pattern = Path(entry[0]), entry[1]
            try:
                st = os.stat(folder)
            except OSError:
                continue
            dev = st.st_dev
            out[(st.st_dev, st.st_ino)] = folder
            try:
                items = list(os.scandir(folder)) if files else []
            except OSError:
                continue
            for item in items:
                if not fnmatch.fnmatch(item.name, pattern):
                    continue
                try:
                    if item.is_symlink():
                        st = os.stat(item.path)
                        out[(st.st_dev, st.st_ino)] = Path(item.path)
                    elif item.is_file():
                        out[(dev, item.inode())] = Path(item.path)
                except OSError:
                    continue
        elif entry is not None:
            try:
                st = os.stat(entry)
            except OSError:
                continue
            out[(st.st_dev, st.st_ino)] = Path(entry)
    return out


def _nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_writable(path: Path, folder_output: bool) -> None:
    base = path if folder_output and path.is_dir() else _nearest_existing(path if folder_output else path.parent)
    if not base.is_dir():
        raise InputError(path, f"cannot be created: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sas3d-write-test-", dir=base)
    except OSError as exc:
        raise InputError(path, f"cannot be written: no permission to create files in {base} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def _visible_entries(folder: Path) -> list[str]:
    from sas3d.utils.atomic import TEMP_SUFFIX

    return [e for e in os.listdir(folder) if not e.endswith(TEMP_SUFFIX)]


def _check_folder(out: Output, overwrite: bool) -> None:
    path = out.path
    if not path.is_dir():
        raise InputError(path, "exists and is a file, not a folder: choose a folder name for this output")
    if overwrite or not out.replaces or (out.marker and (path / out.marker).exists()):
        return
    hit = sorted(e for e in _visible_entries(path) if any(fnmatch.fnmatch(e, pat) for pat in out.replaces))
    if hit:
        shown = ", ".join(hit[:4]) + (", ..." if len(hit) > 4 else "")
        raise InputError(
            path,
            f"is a folder this command did not write (no {out.marker}) and it would replace what is there "
            f"({shown}); choose a new or empty folder, or pass --overwrite",
        )


def _check_file(out: Output, overwrite: bool) -> None:
    path = out.path
    if path.is_dir():
        raise InputError(path, f"is a folder; give a file name for this output (e.g. {path / ('out.' + out.kind)})")
    try:
        found = file_kind(path)
    except OSError as exc:
        raise InputError(path, f"exists but cannot be read to check what it is ({exc.strerror or exc})") from None
    if found not in ("empty", out.kind) and not overwrite:
        raise InputError(
            path,
            f"exists and is {KIND_NAMES.get(found, found)}, not {KIND_NAMES[out.kind]}; "
            "pass --overwrite to replace it, or choose another name",
        )


def check_outputs(outputs: Iterable[Output], reads: Iterable[Read] = (), overwrite: bool = False) -> None:
    """Raise InputError for the first output that must not be written (see the module docstring)."""
    outputs = [Output(Path(o.path), o.kind, tuple(o.replaces), o.marker) for o in outputs]
    seen: dict[str, Path] = {}
    for out in outputs:
        key = os.path.realpath(out.path)
        if key in seen:
            raise InputError(out.path, f"is given for two outputs (also as {seen[key]}); give each its own name")
        seen[key] = out.path
    reads = list(reads)
    existing = [o for o in outputs if os.path.exists(o.path)]
    # scanning the frame folders is only needed when a file output already exists
    identities = _identities(reads, files=any(o.kind != "folder" for o in existing)) if existing else {}
    for out in outputs:
        if os.path.exists(out.path):
            st = os.stat(out.path)
            same = identities.get((st.st_dev, st.st_ino))
            if same is not None:
                alias = "" if os.path.abspath(same) == os.path.abspath(out.path) else f" (it is {same})"
                raise InputError(
                    out.path,
                    f"is an input of this command{alias}; writing the output there would destroy it: choose another name",
                )
            (_check_folder if out.kind == "folder" else _check_file)(out, overwrite)
        _check_writable(out.path, out.kind == "folder")
