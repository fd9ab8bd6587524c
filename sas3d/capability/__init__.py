"""Annotation-free model capability (SAS 3.2): generated images + pseudo masks -> per-class IoU per teacher.

``StableDiffusionGenerator`` (diffusers) and ``SamRefiner`` (transformers) are imported lazily so the
offline path never loads them.
"""

from sas3d.capability.capability import (
    Capability,
    CapabilityConfig,
    compute_capability,
    mask_counts,
    resolve_vocabulary,
    teacher_class_map,
)
from sas3d.capability.generators import GeneratedImage, Generator, ProceduralGenerator

__all__ = [
    "Capability",
    "CapabilityConfig",
    "GeneratedImage",
    "Generator",
    "ProceduralGenerator",
    "StableDiffusionGenerator",
    "compute_capability",
    "mask_counts",
    "resolve_vocabulary",
    "teacher_class_map",
]


def __getattr__(name: str):
    if name == "StableDiffusionGenerator":
        from sas3d.capability.diffusion import StableDiffusionGenerator

        return StableDiffusionGenerator
    raise AttributeError(name)
