"""The one text-encoder interface every stage asks for class/query embeddings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch


class TextEncoder(ABC):
    """Maps strings to L2-normalised embeddings in the shared text space."""

    name: str
    dim: int

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Return a (len(texts), dim) float32 CPU tensor with unit-norm rows."""
