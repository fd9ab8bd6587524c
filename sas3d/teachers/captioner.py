"""Mask captioners for model alignment via text (SAS 3.1): ``caption(image, mask) -> str``.

The paper uses TAP; we offer a real transformers image-to-text backend (:class:`HFCaptioner`, e.g.
BLIP) and a deterministic offline one (:class:`OfflineCaptioner`) that describes a mask's colour,
shape and size, so the simulated mask teacher goes through the same alignment path with no weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from sas3d.errors import ConfigError, InputError

# Named colours for the offline captioner (sRGB); the mean colour of a mask maps to the nearest.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "white": (240, 240, 240),
    "red": (200, 30, 30),
    "orange": (240, 140, 30),
    "yellow": (230, 210, 40),
    "green": (40, 150, 50),
    "blue": (40, 70, 200),
    "purple": (130, 50, 160),
    "pink": (240, 150, 190),
    "brown": (120, 75, 40),
    "beige": (215, 195, 160),
}


class Captioner(ABC):
    """Describes the region ``mask`` (H, W bool) of ``image`` (H, W, 3 uint8) in a short phrase."""

    name: str

    @abstractmethod
    def caption(self, image: np.ndarray, mask: np.ndarray) -> str:
        ...

    def caption_many(self, image: np.ndarray, masks: Sequence[np.ndarray]) -> list[str]:
        """Caption several masks of one image (backends override this to batch)."""
        return [self.caption(image, m) for m in masks]


def _check(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
        raise InputError(None, f"captioner needs an (H, W, 3) image and an (H, W) mask; got {image.shape} and {mask.shape}")


class OfflineCaptioner(Captioner):
    """Deterministic caption "a {size} {shape} {colour} object" from simple mask statistics.

    colour: the named colour nearest (RGB distance) to the mean RGB inside the mask;
    shape: bbox height/width > ``elongation`` -> "tall", < 1/``elongation`` -> "wide", else "square"
    when the mask fills > ``square_fill`` of its bbox, else "round";
    size: mask area / image area < ``small_fraction`` -> "small", > ``large_fraction`` -> "large", else omitted.
    """

    name = "offline-colour-shape"

    def __init__(self, elongation: float = 1.6, square_fill: float = 0.9, small_fraction: float = 0.01, large_fraction: float = 0.2):
        self.elongation = elongation
        self.square_fill = square_fill
        self.small_fraction = small_fraction
        self.large_fraction = large_fraction
        self._names = list(NAMED_COLOURS)
        self._rgb = np.array([NAMED_COLOURS[n] for n in self._names], dtype=np.float64)

    def colour_name(self, rgb: np.ndarray) -> str:
        """Nearest named colour to one RGB triple."""
        return self._names[int(np.argmin(((self._rgb - np.asarray(rgb, np.float64)) ** 2).sum(1)))]

    def caption(self, image: np.ndarray, mask: np.ndarray) -> str:
        mask = np.asarray(mask, dtype=bool)
        _check(image, mask)
        if not mask.any():
            return "an object"
        colour = self.colour_name(image[mask].reshape(-1, 3).mean(0))
        rows, cols = np.nonzero(mask)
        h = rows.max() - rows.min() + 1
        w = cols.max() - cols.min() + 1
        aspect = h / w
        if aspect > self.elongation:
            shape = "tall"
        elif aspect < 1.0 / self.elongation:
            shape = "wide"
        else:
            shape = "square" if mask.sum() / (h * w) > self.square_fill else "round"
        fraction = mask.sum() / mask.size
        size = "small" if fraction < self.small_fraction else "large" if fraction > self.large_fraction else ""
        return " ".join(w for w in ("a", size, shape, colour, "object") if w)


class HFCaptioner(Captioner):
    """A transformers image-to-text model (BLIP by default) captioning the mask's bounding-box crop.

    Pixels outside the mask inside the crop are set to the crop's mean colour so the caption describes
    the masked object rather than its surroundings. ``HFCaptioner("Salesforce/blip-image-captioning-base")``
    loads real weights on a user's machine; ``HFCaptioner(model=..., processor=...)`` takes built objects.
    """

    def __init__(
        self,
        model_id: str | None = "Salesforce/blip-image-captioning-base",
        device: str = "cpu",
        *,
        model: Any = None,
        processor: Any = None,
        max_new_tokens: int = 20,
        batch_size: int = 16,
        min_crop: int = 8,
    ):
        if model is None or processor is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            from sas3d.utils.hub import pretrained_options

            try:
                opts = pretrained_options(model_id, "captioner")
                processor = processor or AutoProcessor.from_pretrained(model_id, **opts)
                model = model or AutoModelForImageTextToText.from_pretrained(model_id, **opts)
            except OSError as exc:
                raise ConfigError(f"cannot load captioner {model_id!r}: {exc}") from exc
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.min_crop = min_crop
        self.name = f"hf:{model_id if model_id else 'custom'}"

    def _crop(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        _check(image, mask)
        if not mask.any():
            return image
        rows, cols = np.nonzero(mask)
        r0, r1 = rows.min(), rows.max() + 1
        c0, c1 = cols.min(), cols.max() + 1
        # Very small crops carry no context; grow them to min_crop pixels.
        pad_r = max(0, self.min_crop - (r1 - r0)) // 2 + 1
        pad_c = max(0, self.min_crop - (c1 - c0)) // 2 + 1
        r0, r1 = max(0, r0 - pad_r), min(image.shape[0], r1 + pad_r)
        c0, c1 = max(0, c0 - pad_c), min(image.shape[1], c1 + pad_c)
        crop = image[r0:r1, c0:c1].copy()
        inside = mask[r0:r1, c0:c1]
        crop[~inside] = crop[inside].mean(0).astype(np.uint8)
        return crop

    def caption(self, image: np.ndarray, mask: np.ndarray) -> str:
        return self.caption_many(image, [mask])[0]

    def caption_many(self, image: np.ndarray, masks: Sequence[np.ndarray]) -> list[str]:
        import torch

        crops = [self._crop(image, m) for m in masks]
        captions: list[str] = []
        for start in range(0, len(crops), self.batch_size):
            inputs = self.processor(images=crops[start : start + self.batch_size], return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)
            with torch.no_grad():
                ids = self.model.generate(pixel_values=pixel_values, max_new_tokens=self.max_new_tokens)
            captions += [c.strip() for c in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return captions
