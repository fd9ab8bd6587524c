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

    @abstractmethod
    def predict(self, frame: Frame) -> np.ndarray:
        ...
