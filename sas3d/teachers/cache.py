"""Per-frame on-disk cache of teacher outputs: ``<cache_dir>/<frame stem>.safetensors`` (fp16).

The registry's layout is ``<cache root>/<scene>/<teacher>/<frame>.safetensors`` (:func:`cache_dir_for`).
A cached file is reused only if its stored metadata (teacher name + config) equals the teacher's
current metadata, so changing a teacher's config never silently returns stale features.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.errors import InputError
from sas3d.scene.types import Frame
from sas3d.teachers.base import Teacher
from sas3d.utils.atomic import load_safetensors, save_safetensors_atomic


def teacher_metadata(teacher: Teacher) -> dict[str, Any]:
    """What identifies a teacher's outputs: ``teacher.metadata`` if it has one, else its name."""
    meta = getattr(teacher, "metadata", None)
    # JSON round trip so the in-memory value compares equal to what a cache file stores.
    return json.loads(json.dumps(to_dict(dict(meta)) if meta else {"name": teacher.name}, default=str))


def safe_name(name: str) -> str:
    """A teacher/scene name usable as one folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "teacher"


def cache_dir_for(context: Any, teacher_name: str) -> Path | None:
    """``<context.cache_dir>/<scene name>/<teacher name>`` or None when the context has no cache."""
    root = getattr(context, "cache_dir", None)
    if root is None:
        return None
    scene = getattr(context, "scene", None)
    scene_name = safe_name(scene.name) if scene is not None else "_noscene"
    return Path(root) / scene_name / safe_name(teacher_name)


def maybe_cached(teacher: Teacher, context: Any) -> Teacher:
    """Wrap ``teacher`` in a :class:`CachedTeacher` at the registry layout when the context has a cache dir."""
    directory = cache_dir_for(context, teacher.name)
    return teacher if directory is None else CachedTeacher(teacher, directory)


class CachedTeacher(Teacher):
    """Serves ``teacher.predict(frame)`` from ``<cache_dir>/<frame.stem>.safetensors`` when present."""

    def __init__(self, teacher: Teacher, cache_dir: str | Path):
        self.teacher = teacher
        self.cache_dir = Path(cache_dir)
        self.name = teacher.name
        self.metadata = teacher_metadata(teacher)

    @property
    def identity(self) -> str:
        return self.teacher.identity

    @property
    def text_space(self) -> str | None:
        return self.teacher.text_space

    def path_for(self, frame: Frame) -> Path:
        return self.cache_dir / f"{frame.stem}.safetensors"

    def load(self, frame: Frame) -> np.ndarray | None:
        """The cached map for ``frame``, or None when absent, unreadable or made by another config."""
        path = self.path_for(frame)
        if not path.is_file():
            return None
        try:
            tensors, meta = load_safetensors(path)
        except InputError:
            return None  # unreadable (e.g. written by a crashed older version): recompute
        if meta.get("teacher") != self.metadata or "features" not in tensors:
            return None
        if meta.get("domain", "scene") != frame.domain:  # a probe image is not the scene frame of the same stem
            return None
        return tensors["features"].float().numpy()

    def predict(self, frame: Frame) -> np.ndarray:
        cached = self.load(frame)
        return cached if cached is not None else self._store(frame, self.teacher.predict(frame))

    def predict_batch(self, frames: Sequence[Frame]) -> list[np.ndarray]:
        """Cached frames from disk; the rest in one ``teacher.predict_batch`` call when the teacher has one."""
        out = [self.load(f) for f in frames]
        todo = [i for i, o in enumerate(out) if o is None]
        batch = getattr(self.teacher, "predict_batch", None)
        fresh = batch([frames[i] for i in todo]) if (batch and todo) else [self.teacher.predict(frames[i]) for i in todo]
        for i, pred in zip(todo, fresh):
            out[i] = self._store(frames[i], pred)
        return out  # type: ignore[return-value]

    def _store(self, frame: Frame, prediction: np.ndarray) -> np.ndarray:
        path = self.path_for(frame)
        out = np.asarray(prediction, dtype=np.float32)
        save_safetensors_atomic(
            path,
            {"features": torch.from_numpy(out).half()},
            {"teacher": self.metadata, "frame": frame.stem, "color_path": str(frame.color_path), "domain": frame.domain},
        )
        # Return what the cache will return next time, so a first and a second run agree exactly.
        return out.astype(np.float16).astype(np.float32)
