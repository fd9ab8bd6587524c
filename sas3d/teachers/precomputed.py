"""Bring-your-own teacher: per-frame outputs computed elsewhere, read from a folder.

For each frame (named by its colour file's stem, ``Frame.stem``) the folder holds either
- ``<stem>.npy``: a dense (h, w, C) float map already in the shared text space, or
- ``<stem>.png`` (uint16 segment ids) + ``<stem>.json`` (``{"id": "label"}`` or
  ``{"id": {"label": ..., "caption": ...}}``): a mask teacher's output, turned into a dense map
  with the shared text encoder (:func:`sas3d.teachers.alignment.masks_to_dense`). Id 0, and any
  id the JSON does not name (warned about once, naming the file), is "no mask": zero features,
  which fusion does not count as a view (:mod:`sas3d.fusion.multiview`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from sas3d.errors import InputError
from sas3d.scene.types import Frame
from sas3d.teachers.base import Teacher
from sas3d.text.base import TextEncoder


class PrecomputedTeacher(Teacher):
    """Reads ``DIR/<frame stem>.npy`` (dense) or ``DIR/<stem>.png`` + ``.json`` (masks) per frame.

    ``text_encoder`` embeds the mask form's labels and fixes the width a dense map must have (the
    first frame with another width is refused, naming the file). The teacher is named after the folder
    (``name`` overrides; ``precomputed:DIR#NAME`` on the command line), which is how capability scores are
    matched to it: name the folder of a model's probe-image outputs and of its scene outputs alike.
    """

    def __init__(self, directory: str | Path, text_encoder: TextEncoder | None = None, name: str | None = None):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError(self.directory, "precomputed teacher folder not found")
        self.name = name or self.directory.resolve().name
        self.text_encoder = text_encoder
        self._warned_unnamed = False

    @property
    def identity(self) -> str:
        return f"precomputed:{self.name}"

    def predict(self, frame: Frame) -> np.ndarray:
        files, problem = self._locate(frame.stem)
        if problem is not None:
            raise InputError(*problem)
        return self._read_dense(files[0]) if len(files) == 1 else self._read_masks(*files)

    def missing_outputs(self, stems: Iterable[str]) -> list[Path]:
        """For each stem without a usable output, the file it lacks (``<stem>.npy``, or the ``.json`` of a lone ``.png``)."""
        return [problem[0] for problem in (self._locate(stem)[1] for stem in stems) if problem is not None]

    def _locate(self, stem: str) -> tuple[tuple[Path, ...], tuple[Path, str] | None]:
        """The frame's output files, (npy,) or (png, json), or () and (the missing file, the problem)."""
        dense = self.directory / f"{stem}.npy"
        if dense.is_file():
            return (dense,), None
        ids, labels = self.directory / f"{stem}.png", self.directory / f"{stem}.json"
        if ids.is_file() and labels.is_file():
            return (ids, labels), None
        if ids.is_file():
            return (), (labels, f"segment labels missing for {ids.name} (frame {stem})")
        return (), (dense, f"precomputed output for frame {stem} not found (expected {dense.name}, or {ids.name} + {labels.name})")

    def _read_dense(self, path: Path) -> np.ndarray:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"unreadable .npy file ({exc})") from None
        if array.ndim != 3:
            raise InputError(path, f"expected an (h, w, C) feature map, got shape {array.shape}")
        if array.dtype.kind not in "fiu" or min(array.shape) == 0:
            raise InputError(path, f"expected a non-empty numeric (h, w, C) map, got {array.dtype} {array.shape}")
        array = np.asarray(array, dtype=np.float32)
        encoder = self.text_encoder
        if encoder is not None and array.shape[2] != int(encoder.dim):
            raise InputError(path, f"has {array.shape[2]} channels but the text space {encoder.identity} is {encoder.dim}-d: "
                                   "dense maps must be features in the text space (--text-encoder)")
        if not np.isfinite(array).all():
            raise InputError(path, f"feature map contains {int((~np.isfinite(array)).sum())} NaN/inf values")
        return array

    def _read_masks(self, ids_path: Path, labels_path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(ids_path) as im:
                segment_ids = np.asarray(im).astype(np.int64)
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(ids_path, f"unreadable segment-id image ({exc})") from None
        if segment_ids.ndim != 2:
            raise InputError(ids_path, f"segment ids must be a single-channel image, got shape {segment_ids.shape}")
        try:
            raw = json.loads(labels_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(labels_path, f"unreadable JSON ({exc})") from None
        segments = _parse_segments(raw, labels_path)
        unnamed = sorted(int(i) for i in np.unique(segment_ids) if int(i) != 0 and int(i) not in segments)
        if unnamed and not self._warned_unnamed:
            import warnings

            self._warned_unnamed = True  # once per teacher: every frame of a run usually has the same cause
            warnings.warn(f"{ids_path}: segment ids {unnamed[:8]}{' ...' if len(unnamed) > 8 else ''} are not named in "
                          f"{labels_path.name}; their pixels count as no prediction (0 is the no-mask id)", stacklevel=2)
        encoder = self.text_encoder
        if encoder is None:
            raise InputError(labels_path, "mask-form outputs need a text encoder to embed their labels")
        from sas3d.teachers.alignment import masks_to_dense

        dense = np.asarray(masks_to_dense(segment_ids, segments, encoder, image=None), dtype=np.float32)
        return dense


def _parse_segments(raw: object, path: Path) -> dict[int, dict]:
    """``{"3": "chair"}`` or ``{"3": {"label": "chair", "caption": "a red chair"}}`` -> {3: {label, caption}}."""
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object mapping segment id -> label")
    segments: dict[int, dict] = {}
    for key, value in raw.items():
        try:
            segment = int(key)
        except ValueError:
            raise InputError(path, f"segment id {key!r} is not an integer") from None
        if isinstance(value, str):
            segments[segment] = {"label": value, "caption": None}
        elif isinstance(value, dict) and isinstance(value.get("label"), str):
            segments[segment] = {"label": value["label"], "caption": value.get("caption")}
        else:
            raise InputError(path, f"segment {key}: expected a label string or {{'label': ..., 'caption': ...}}, got {value!r}")
    return segments


def from_spec(argument: str, context) -> PrecomputedTeacher:
    """Registry factory for ``precomputed:DIR`` (named after DIR's folder) or ``precomputed:DIR#NAME``."""
    directory, _, name = argument.partition("#")
    if not directory:
        raise InputError(None, "precomputed teacher needs a folder: precomputed:DIR or precomputed:DIR#NAME")
    encoder = getattr(context, "text_encoder", None)
    return PrecomputedTeacher(directory, text_encoder=encoder, name=name or None)


__all__ = ["PrecomputedTeacher", "from_spec"]
