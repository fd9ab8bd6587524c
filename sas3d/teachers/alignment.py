"""Model alignment via text (SAS 3.1, REFERENCE.md): mask teachers -> dense maps in the shared text space.

Each mask gets a caption; we keep the caption's adjectives and encode "a {adjectives} {label} in a
scene" with the shared text encoder, then paint that embedding onto the mask's pixels. Pixels in
no mask stay zero (fusion then averages them in as "no opinion").

Adjective rule (spaCy is not available): a caption word is an adjective iff it is in
:data:`ADJECTIVES`, a fixed list of colours, sizes, shapes and materials -- the attributes the paper's
examples keep ("wooden bench"). Order follows the caption; duplicates and the label's own words are dropped.
"""

from __future__ import annotations

import re
import weakref
from typing import Mapping, Sequence

import numpy as np
import torch

from sas3d.errors import InputError
from sas3d.teachers.captioner import NAMED_COLOURS, Captioner
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import CATCH_ALL, prompt_for

CAPTION_TEMPLATE = "a {adjectives} {label} in a scene"  # SAS 3.1 code: adjectives + label + the query prompt's tail

_COLOURS = set(NAMED_COLOURS) | {"grey", "silver", "gold", "golden", "tan", "cream", "dark", "light", "bright", "pale", "colorful", "colourful"}
_SIZES = {"small", "large", "big", "tiny", "huge", "tall", "short", "long", "wide", "narrow", "thin", "thick", "little"}
_SHAPES = {"round", "square", "rectangular", "circular", "oval", "flat", "curved", "straight", "cylindrical"}
_MATERIALS = {
    "wooden", "wood", "metal", "metallic", "glass", "plastic", "leather", "fabric", "marble", "stone",
    "ceramic", "concrete", "tiled", "carpeted", "brick", "steel", "velvet", "cotton", "wicker", "porcelain",
    "striped", "patterned", "checkered", "floral", "shiny", "soft", "empty", "open", "closed", "old", "new", "modern",
}
ADJECTIVES = frozenset(_COLOURS | _SIZES | _SHAPES | _MATERIALS)


def extract_adjectives(caption: str, label: str = "") -> list[str]:
    """Caption words found in :data:`ADJECTIVES`, in caption order, without duplicates or the label's words."""
    label_words = set(label.lower().split())
    out: list[str] = []
    for word in re.findall(r"[a-z]+", caption.lower()):
        if word in ADJECTIVES and word not in label_words and word not in out:
            out.append(word)
    return out


def caption_template(adjectives: Sequence[str], label: str) -> str:
    """``"a {adjectives} {label} in a scene"``; with no adjectives it is the plain query prompt."""
    if not adjectives:
        return f"a {label} in a scene"
    return CAPTION_TEMPLATE.format(adjectives=" ".join(adjectives), label=label)


def mask_prompt(label: str, caption: str | None) -> str:
    """The text encoded for one mask. The catch-all class stays the bare word "other" (REFERENCE.md)."""
    if label in CATCH_ALL or not caption:
        return prompt_for(label)
    return caption_template(extract_adjectives(caption, label), label)


# prompt -> embedding per encoder, shared across frames (a scene repeats the same few prompts).
_PROMPT_CACHE: "weakref.WeakKeyDictionary[TextEncoder, dict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()
_PROMPT_CACHE_LIMIT = 100_000


def encode_prompts(text_encoder: TextEncoder, prompts: Sequence[str]) -> torch.Tensor:
    """(n, C) embeddings of ``prompts``; unseen prompts are encoded in one batched call and memoised."""
    memo = _PROMPT_CACHE.setdefault(text_encoder, {})
    missing = list(dict.fromkeys(p for p in prompts if p not in memo))
    if missing:
        if len(memo) + len(missing) > _PROMPT_CACHE_LIMIT:
            memo.clear()
        for p, e in zip(missing, text_encoder.encode(missing)):
            memo[p] = e.float()
    if not prompts:
        return torch.zeros(0, text_encoder.dim)
    return torch.stack([memo[p] for p in prompts])


def masks_to_dense(
    segment_ids: np.ndarray,
    segments: Mapping[int, Mapping[str, object]],
    text_encoder: TextEncoder,
    image: np.ndarray | None = None,
    captioner: Captioner | None = None,
) -> np.ndarray:
    """Paint each segment's aligned text embedding onto its pixels -> (H, W, C) float32.

    ``segment_ids`` (H, W) int: a segment id per pixel; ids missing from ``segments`` (e.g. -1 or 0
    for "no mask") give zero features. ``segments[id]`` = ``{"label": str, "caption": str | None}``.
    A missing caption is produced by ``captioner`` from ``image`` (resized to (H, W) if needed)
    when both are given; otherwise the bare label prompt is used.
    """
    ids = np.asarray(segment_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(None, f"segment ids must be an (H, W) integer array, got {ids.dtype} {ids.shape}")
    present = [int(i) for i in np.unique(ids) if int(i) in segments]
    for i in present:
        label = segments[i].get("label")
        if not isinstance(label, str) or not label.strip():
            raise InputError(None, f"segment {i} has no label (got {label!r})")

    captions = {i: segments[i].get("caption") for i in present}
    todo = [i for i in present if not captions[i]]
    if todo and image is not None and captioner is not None:
        img = _resize_image(np.asarray(image), ids.shape)
        for i, text in zip(todo, captioner.caption_many(img, [ids == i for i in todo])):
            captions[i] = text

    prompts = [mask_prompt(str(segments[i]["label"]), captions[i]) for i in present]
    table = encode_prompts(text_encoder, prompts).numpy()
    out = np.zeros((*ids.shape, text_encoder.dim), dtype=np.float32)
    if present:
        keys = np.asarray(present)
        pos = np.searchsorted(keys, ids).clip(max=len(keys) - 1)
        hit = keys[pos] == ids
        out[hit] = table[pos[hit]]
    return out


def _resize_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if image.shape[:2] == tuple(shape):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image.astype(np.uint8)).resize((shape[1], shape[0]), Image.BILINEAR))
