"""The one text-encoder interface every stage asks for class/query embeddings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch


class TextEncoder(ABC):
    """Maps strings to L2-normalised embeddings in the shared text space."""

    name: str
    dim: int

    @property
    def identity(self) -> str:
        """What makes two embeddings comparable: the encoder and model (and any fixed map applied to them).

        Stored as ``text_space`` in every artefact (fused features, capability, checkpoints, eval JSON)
        and checked on load (:func:`sas3d.identity.check_text_space`). Subclasses name their model.
        """
        return str(getattr(self, "name", type(self).__name__))

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Return a (len(texts), dim) float32 CPU tensor with unit-norm rows."""
