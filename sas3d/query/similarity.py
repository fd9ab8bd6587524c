"""Per-point features from either a trained 3D model or a fused-feature file, and text similarity on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sas3d.errors import InputError
from sas3d.fusion.features import PointFeatures
from sas3d.scene.types import Scene
from sas3d.text.labelsets import PROMPT_TEMPLATE

DEFAULT_VOXEL_SIZE = 0.02  # OpenScene ScanNet/Matterport voxel size, used if a checkpoint does not record one
MAX_TEMPLATED_WORDS = 3  # "auto" prompt: up to this many words is a bare class name, templated like the label sets


def text_similarity(point_features: Any, text_embedding: Any) -> torch.Tensor:
    """(N,) float32 cosine similarity of each point feature to one text embedding (C,). Zero rows -> 0."""
    feats = point_features if isinstance(point_features, torch.Tensor) else torch.from_numpy(np.asarray(point_features))
    text = text_embedding if isinstance(text_embedding, torch.Tensor) else torch.from_numpy(np.asarray(text_embedding))
    text = text.float().reshape(-1)
    if feats.ndim != 2 or feats.shape[1] != text.shape[0]:
        raise ValueError(f"features {tuple(feats.shape)} and text embedding {tuple(text.shape)} differ in dimension")
    text = text / text.norm().clamp_min(1e-8)
    out = torch.empty(feats.shape[0], dtype=torch.float32)
    step = 1 << 18
    for s in range(0, feats.shape[0], step):
        f = feats[s : s + step].float()
        out[s : s + step] = (f @ text) / f.norm(dim=1).clamp_min(1e-8)
    return out


def query_prompt(text: str, mode: str = "auto") -> str:
    """The string actually encoded for a free-text query.

    ``raw``: as typed. ``template``: "a {text} in a scene" (the prompt the label sets use: OpenScene's
    prompt engineering, SAS Sec. 4.1).
    ``auto`` (default): a bare name of up to three words ("chair", "shower curtain") is templated so it
    matches how class texts were encoded; anything longer is taken as a sentence and used as typed.
    """
    text = text.strip()
    if not text:
        raise InputError(None, "the query text is empty")
    if mode == "raw":
        return text
    if mode == "template" or (mode == "auto" and len(text.split()) <= MAX_TEMPLATED_WORDS):
        return PROMPT_TEMPLATE.format(name=text)
    if mode != "auto":
        raise InputError(None, f"unknown prompt mode {mode!r}; use auto, raw or template")
    return text


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:
        raise InputError(path, f"not a readable safetensors file ({exc})") from None


def metadata_value(meta: Any, key: str) -> Any:
    """First value stored under ``key`` anywhere in a nested metadata dict (config layouts differ by stage)."""
    if isinstance(meta, dict):
        if key in meta:
            return meta[key]
        for v in meta.values():
            found = metadata_value(v, key)
            if found is not None:
                return found
    return None


def source_kind(source: str | Path) -> str:
    """``"checkpoint"`` (safetensors with ``model.*`` keys), ``"fused"`` (our PointFeatures) or ``"reference"`` (.pt/.pth)."""
    path = Path(source)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.suffix in (".pt", ".pth"):
        return "reference"
    keys = _safetensors_keys(path)
    if any(k.startswith("model.") for k in keys):
        return "checkpoint"
    if "features" in keys and "seen" in keys:
        return "fused"
    raise InputError(path, f"neither a model checkpoint (model.* tensors) nor a fused-feature file (features, seen); has {sorted(keys)[:8]}")


def load_point_features(
    source: str | Path,
    scene: Scene,
    *,
    device: str = "cpu",
    tta: int = 1,
    voxel_size: float | None = None,
) -> PointFeatures:
    """Per-point features of ``scene`` from a checkpoint (runs the 3D model), a fused file, or a reference ``.pt``.

    Model features come back as float32 unit rows with every point seen; fused features keep their
    ``seen`` mask. The point count must match the scene.
    """
    path = Path(source)
    kind = source_kind(path)
    if kind == "checkpoint":
        from sas3d.evaluate.predict import predict_3d
        from sas3d.models.checkpoint import load_checkpoint

        model, metadata, _ = load_checkpoint(path)
        vs = float(voxel_size or metadata_value(metadata, "voxel_size") or DEFAULT_VOXEL_SIZE)
        model = model.to(device).eval()
        feats = predict_3d(model, scene.points, vs, tta=tta, device=device, colors=scene.colors)
        seen = torch.ones(scene.num_points, dtype=torch.bool)
        meta = {"source": str(path), "kind": "distill", "voxel_size": vs, "tta": tta}
        for key in ("text_space", "teacher_identities"):  # sas3d.identity: what the student was distilled from
            if metadata.get(key) is not None:
                meta[key] = metadata[key]
        return PointFeatures(feats, seen, meta)
    if kind == "reference":
        from sas3d.evaluate.interop import load_reference_fused

        return load_reference_fused(path, scene.num_points)
    pf = PointFeatures.load(path)
    if pf.num_points != scene.num_points:
        raise InputError(path, f"has features for {pf.num_points} points but scene {scene.name!r} has {scene.num_points}")
    return pf


def truncation_warning(encoder: Any, prompt: str) -> str | None:
    """A warning when ``prompt`` is longer than ``encoder`` reads (the rest would be dropped silently), else None."""
    from sas3d.text.encoders import token_counts

    counts = token_counts(encoder, prompt)
    if counts is None or counts[1] >= counts[0]:
        return None
    total, kept = counts
    return (f"the query is {total} tokens long but the {getattr(encoder, 'name', 'text')} encoder reads only the first "
            f"{kept}: the last {total - kept} tokens do not change the result; shorten the query")
