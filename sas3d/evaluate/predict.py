"""Turning point features into labels: cosine classification, the 2D-3D ensemble, query-name mapping, TTA.

Every function works on torch tensors in the shared text space; text rows and feature rows are
L2-normalised here, so callers may pass raw (e.g. fp16 fused) features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import LabelSet, get_label_set, nuscenes43_mapping, prompt_for

NO_PREDICTION = -1  # label of a point that has no feature (unseen by every camera in fusion mode)
_CHUNK = 262_144  # points per matmul block: bounds memory on multi-million-point scenes


@dataclass
class ClassText:
    """Text embeddings to classify against, and how each query row maps to an evaluated class.

    ``embeddings`` (Q, C) unit rows, one per query name; ``to_class`` (Q,) long maps query row ->
    class index of ``label_set`` (identity unless several names stand for one class, e.g. nuScenes 43->16).
    """

    label_set: LabelSet
    queries: list[str]
    embeddings: torch.Tensor
    to_class: torch.Tensor


def build_class_text(label_set: LabelSet | str, encoder: TextEncoder, *, nuscenes_details: bool = True) -> ClassText:
    """Encode a label set's prompts ("a {name} in a scene"; catch-all -> "other").

    For ``nuscenes16`` (and ``nuscenes_details``) the 43 unambiguous names of SAS Table 8 are encoded
    instead and mapped back to the 16 classes, as SAS/OpenScene evaluate nuScenes.
    """
    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    if ls.name == "nuscenes16" and nuscenes_details:
        mapping = nuscenes43_mapping()
        queries = list(mapping)
        to_class = torch.tensor([ls.index(mapping[q]) for q in queries], dtype=torch.long)
    else:
        queries = list(ls.classes)
        to_class = torch.arange(len(queries), dtype=torch.long)
    emb = encoder.encode([prompt_for(q) for q in queries]).float()
    return ClassText(ls, queries, _unit(emb), to_class)


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def cosine_scores(point_features: Any, class_text: Any) -> torch.Tensor:
    """(N, K) cosine similarity between every point feature and every text row (zero rows -> 0)."""
    feats, text = _as_tensor(point_features), _unit(_as_tensor(class_text))
    if feats.ndim != 2 or text.ndim != 2 or feats.shape[1] != text.shape[1]:
        raise ValueError(f"feature dim {tuple(feats.shape)} does not match text {tuple(text.shape)}")
    out = torch.empty(feats.shape[0], text.shape[0], dtype=torch.float32)
    for s in range(0, feats.shape[0], _CHUNK):
        out[s : s + _CHUNK] = _unit(feats[s : s + _CHUNK]) @ text.T
    return out


def _best(point_features: Any, class_text: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: (max cosine, argmax row), computed blockwise without materialising (N, K)."""
    feats, text = _as_tensor(point_features), _unit(_as_tensor(class_text))
    if feats.ndim != 2 or text.ndim != 2 or feats.shape[1] != text.shape[1]:
        raise ValueError(f"feature dim {tuple(feats.shape)} does not match text {tuple(text.shape)}")
    best = torch.empty(feats.shape[0], dtype=torch.float32)
    arg = torch.empty(feats.shape[0], dtype=torch.long)
    for s in range(0, feats.shape[0], _CHUNK):
        best[s : s + _CHUNK], arg[s : s + _CHUNK] = (_unit(feats[s : s + _CHUNK]) @ text.T).max(dim=1)
    return best, arg


def classify(
    point_features: Any,
    class_text: Any,
    *,
    to_class: torch.Tensor | None = None,
    seen: Any | None = None,
) -> torch.Tensor:
    """(N,) long labels: argmax of cosine similarity to the (K, C) text rows.

    ``to_class`` maps text rows to class ids (nuScenes 43 names -> 16 classes); ``seen`` (N,) bool
    marks points that have a feature at all -- the others get :data:`NO_PREDICTION`.
    """
    _, arg = _best(point_features, class_text)
    if to_class is not None:
        arg = to_class[arg]
    if seen is not None:
        arg[~_as_tensor(seen).bool()] = NO_PREDICTION
    return arg


def ensemble(
    fused_2d: Any,
    seen: Any,
    feat_3d: Any,
    class_text: Any,
    *,
    to_class: torch.Tensor | None = None,
) -> torch.Tensor:
    """OpenScene 2D-3D ensemble: per point, the label from whichever feature (fused 2D or 3D) has the higher max similarity.

    Unseen points (no fused feature) always use the 3D feature. Ties go to the 3D feature, as in
    OpenScene (it switches to the fused feature only where the 3D max similarity is strictly lower).
    """
    best2d, arg2d = _best(fused_2d, class_text)
    best3d, arg3d = _best(feat_3d, class_text)
    use_2d = _as_tensor(seen).bool() & (best2d > best3d)
    arg = torch.where(use_2d, arg2d, arg3d)
    return to_class[arg] if to_class is not None else arg


def tta_rotations(n: int) -> list[np.ndarray]:
    """The ``n`` deterministic 3x3 test-time transforms: z-rotations by 2*pi*i/n, every odd pass also mirrored in x.

    Pass 0 is the identity, so ``tta=1`` is the single-pass result. Deterministic (no jitter or
    scaling) so that an evaluation is reproducible; only rotations/flips about the gravity axis,
    which a scene's labels are invariant to.
    """
    mats = []
    for i in range(max(1, n)):
        a = 2.0 * math.pi * i / max(1, n)
        rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        if i % 2 == 1:
            rot = rot @ np.diag([-1.0, 1.0, 1.0])
        mats.append(rot)
    return mats


def predict_3d(model: torch.nn.Module, points: np.ndarray, voxel_size: float, tta: int = 1, device: str = "cpu",
               colors: np.ndarray | None = None) -> torch.Tensor:
    """(N, C) unit-row 3D-model features, summed over ``tta`` transformed passes (OpenScene sums 5).

    ``colors`` (N, 3) uint8: the scene's point colours, fed to a student trained on RGB input.

    Summing unit features and re-normalising gives the same argmax as summing the per-pass cosine
    scores, because the text rows are fixed.
    """
    from tqdm import tqdm

    from sas3d.models.inference import predict_point_features

    points = np.asarray(points, dtype=np.float32)
    centre = points.mean(axis=0, keepdims=True)
    total: torch.Tensor | None = None
    mats = tta_rotations(tta)
    for i, rot in enumerate(tqdm(mats, desc="3D passes", disable=len(mats) == 1, leave=False)):
        # pass 0 uses the points untouched, so tta=1 is exactly the plain prediction
        p = points if i == 0 else ((points - centre) @ rot.T.astype(np.float32)) + centre
        f = predict_point_features(model, p, voxel_size, device=device, colors=colors).float().cpu()
        total = f if total is None else total + f
    assert total is not None
    return _unit(total)

