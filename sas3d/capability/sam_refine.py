"""Refining a coarse cross-attention mask into a pseudo mask (SAS 3.2).

Official SAS code: up to 3 positive point prompts, one at the distance-transform maximum (the most
interior pixel) of each of the up-to-3 largest connected components of the coarse mask; SAM returns a
single mask. ``NoRefiner`` keeps the coarse mask (for machines without SAM weights).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import ndimage


class Refiner(Protocol):
    """Turns (image, coarse mask) into a refined mask of the same shape."""

    name: str

    def refine(self, image: np.ndarray, coarse: np.ndarray) -> np.ndarray: ...


def prompt_points(coarse: np.ndarray, max_points: int = 3) -> list[tuple[int, int]]:
    """(x, y) pixel prompts: distance-transform maxima of the ``max_points`` largest components."""
    labels, n = ndimage.label(np.asarray(coarse, dtype=bool))
    if n == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    order = np.argsort(-sizes, kind="stable")[:max_points] + 1
    points = []
    for comp in order:
        # Zero padding: the image border counts as outside, so the point lands inside the object.
        dist = ndimage.distance_transform_edt(np.pad(labels == comp, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points.append((int(x), int(y)))
    return points


class NoRefiner:
    """Keep the coarse mask as the pseudo mask."""

    name = "none"

    def refine(self, image: np.ndarray, coarse: np.ndarray) -> np.ndarray:
        return np.asarray(coarse, dtype=bool)


class SamRefiner:
    """SAM (transformers ``SamModel``) prompted with :func:`prompt_points`, single-mask output.

    ``SamRefiner.from_pretrained("facebook/sam-vit-huge")`` loads weights by id on a user's machine;
    tests pass a randomly initialised tiny model and processor.
    """

    name = "sam"

    def __init__(self, model, processor, max_points: int = 3, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.max_points = max_points
        self.device = device

    @classmethod
    def from_pretrained(cls, model_id: str, max_points: int = 3, device: str = "cpu") -> "SamRefiner":
        from transformers import SamModel, SamProcessor

        from sas3d.utils.hub import pretrained_options

        opts = pretrained_options(model_id, "SAM model")
        # PIL backend: the torchvision image backend is not usable everywhere.
        processor = SamProcessor.from_pretrained(model_id, backend="pil", **opts)
        return cls(SamModel.from_pretrained(model_id, **opts), processor, max_points, device)

    def refine(self, image: np.ndarray, coarse: np.ndarray) -> np.ndarray:
        import torch

        points = prompt_points(coarse, self.max_points)
        if not points:  # nothing to prompt with: an empty pseudo mask
            return np.zeros(coarse.shape, dtype=bool)
        inputs = self.processor(
            images=image,
            input_points=[[[list(p) for p in points]]],  # image -> one prompt -> its points
            input_labels=[[[1] * len(points)]],
            return_tensors="pt",
        )
        with torch.no_grad():
            out = self.model(
                pixel_values=inputs["pixel_values"].to(self.device),
                input_points=inputs["input_points"].to(self.device),
                input_labels=inputs["input_labels"].to(self.device),
                multimask_output=False,
            )
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )
        return np.asarray(masks[0][0, 0], dtype=bool)


def build_refiner(spec: str | None, max_points: int = 3, device: str = "cpu") -> Refiner:
    """``None``/``"none"`` -> :class:`NoRefiner`; anything else is a SAM model id or path."""
    if spec in (None, "", "none"):
        return NoRefiner()
    return SamRefiner.from_pretrained(spec, max_points=max_points, device=device)
