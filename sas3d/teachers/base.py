"""The teacher interface. Teachers know nothing of 3D: one frame in, one feature map out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from sas3d.scene.types import Frame


class Teacher(ABC):
    """A 2D open-vocabulary model seen through one interface.

    ``predict`` returns an (h, w, C) float32 map in the shared text space at any resolution;
    fusion resamples it (nearest) to the frame's (height, width).
    """

    name: str

    @property
    def identity(self) -> str:
        """The teacher's kind and model (``clip-dense:<model id>``, ``precomputed:<name>``, ...): stored with
        every per-teacher artefact (fused features, capability rows) and checked where they meet."""
        return self.name

    @property
    def text_space(self) -> str | None:
        """Identity of the text space its features live in: its text encoder's (None when it has none)."""
        from sas3d.identity import text_space_of

        encoder = getattr(self, "text_encoder", None)
        return None if encoder is None else text_space_of(encoder)

    @abstractmethod
    def predict(self, frame: Frame) -> np.ndarray:
        ...
