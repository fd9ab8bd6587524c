"""Build a teacher from a spec string ``kind:argument`` (e.g. ``precomputed:DIR``, ``simulated:lseg``).

Factories are imported lazily so a user without diffusers/transformers weights can still use the
precomputed and simulated teachers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from sas3d.errors import ConfigError
from sas3d.scene.types import Scene
from sas3d.teachers.base import Teacher
from sas3d.text.base import TextEncoder

# kind -> "module:factory"; each factory is ``factory(argument: str, context: TeacherContext) -> Teacher``.
FACTORIES = {
    "precomputed": "sas3d.teachers.precomputed:from_spec",
    "simulated": "sas3d.teachers.simulated:from_spec",
    "clip-dense": "sas3d.teachers.dense_clip:from_spec",
    "sam-clip": "sas3d.teachers.mask_sam:from_spec",
}


@dataclass
class TeacherContext:
    """What a teacher may need besides its own argument."""

    scene: Scene | None = None
    text_encoder: TextEncoder | None = None
    label_set: str = "scannet20"
    cache_dir: Path | None = None  # per-frame output cache root (<cache>/<scene>/<teacher>/<frame>.safetensors)
    device: str = "cpu"
    seed: int = 0


def build_teacher(spec: str, context: TeacherContext | None = None) -> Teacher:
    kind, _, argument = spec.partition(":")
    if kind not in FACTORIES:
        raise ConfigError(f"unknown teacher {spec!r}; kinds: {', '.join(f'{k}:...' for k in FACTORIES)}")
    module_name, factory_name = FACTORIES[kind].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(argument, context or TeacherContext())
