"""Fusing the point features of several teachers: capability-guided (SAS 3.3) and ablation baselines.

Guided fusion, SAS Eq. 6-8 generalised to N teachers. Per point n and teacher t:

* ``c_t = argmax_k f_t . T_k`` (Eq. 6, T = vocabulary text features);
* ``w_t = sum_s S_t[c_s]`` over the predictions of all teachers s that see the point (Eq. 7; for two
  teachers exactly ``S_a[c_a] + S_a[c_b]``; a class predicted by two teachers counts twice, as in the
  paper's two-teacher formula);
* the ``w`` are normalised to sum 1 (official code; ``weight_normalisation="paper"`` divides by N as
  Eq. 7 divides by 2), then
  ``w = softmax(w / tau)`` (Eq. 8, tau = 0.05 in code) and ``fused = sum_t w_t f_t``.

Points seen by only some teachers use only those teachers; an all-zero feature (a mask teacher that
gave no mask there) counts as not seen. By convention the FIRST teacher is the
dense one (LSeg in the paper): where it predicts the catch-all class its feature is kept unchanged
(official code detail; ``keep_dense_catch_all``).

``confusion`` (beyond SAS, ``sas3d.fusion.confusion``): each teacher is weighed by how likely the
class it predicts is the true one given what the teachers predict (naive Bayes), from each teacher's
per-class accuracy (the capability IoUs) or its full confusion on the capability probe images
(``capability_confusion``); where a teacher predicts a class the probe images never showed (the
catch-all) it falls back to Eq. 7-8.

Baselines (SAS Table 3): ``add`` = raw sum of the features, ``linear`` = weights proportional to each
feature's maximum cosine similarity to the vocabulary, ``mean`` = plain average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sas3d.config import to_dict
from sas3d.errors import ConfigError
from sas3d.fusion import confusion as confusion_rule
from sas3d.fusion.features import PointFeatures
from sas3d.identity import TEACHER, TEACHERS, TEXT_SPACE, common_text_space

METHODS = ("guided", "confusion", "add", "linear", "mean")
UNIT_FEATURE_METHODS = ("guided", "confusion")  # combine unit features under normalize_inputs="guided"


@dataclass
class GuidedFusionConfig:
    """Settings of :func:`fuse_teachers`."""

    temperature: float = 0.05  # tau in SAS Eq. 8; official code value (the paper gives no number)
    # How the Eq. 7 sums are scaled before the softmax: "sum" = divide by their total (official code),
    # "paper" = divide by the number of teachers (SAS Eq. 7's "/ 2").
    weight_normalisation: str = "sum"
    keep_dense_catch_all: bool = True  # official code: dense teacher's catch-all prediction keeps its feature
    dense_teacher: int = 0  # which input is the dense teacher (first by convention)
    # ``confusion`` fusion (beyond SAS, sas3d.fusion.confusion). Our choices, picked on benchmarks/fusion_quality.py
    # and benchmarks/real_scan.py together (README: "Confusion-aware fusion"):
    # "accuracy": one-coin model from the capability IoUs (K numbers per teacher, less exposed to the probe
    # images' domain gap); "confusion": the full K x K probe confusion (its off-diagonal entries are what the
    # gap moves). "accuracy" measured better on all three benchmarks (README).
    confusion_model: str = "accuracy"
    confusion_rule: str = "posterior"  # "posterior": naive Bayes over all teachers' predictions; "precision": each alone
    confusion_floor: float = 0.05  # share of each P(prediction | true class) spread uniformly (probe images != scenes)
    confusion_temperature: float = 0.1  # predicted classes weigh P^(1/temperature); 1 = the probability itself
    # Which methods L2-normalise each teacher's point features before combining: "guided" (default),
    # "all" or "none" ("guided" also covers ``confusion``). A fused point feature is a mean over views, shorter where the views disagree; raw,
    # guided fusion would weigh teacher t by w_t * |f_t| instead of SAS Eq. 8's w_t (the paper combines
    # per-pixel unit features: LSeg's pixel features, SEEM's mask embeddings). The Table 3 baselines
    # (add, linear, mean) stay on raw features unless "all".
    normalize_inputs: str = "guided"
    normalize_output: bool = False  # L2-normalise the fused features (classification is cosine: scale-free)
    chunk_size: int = 262144  # points per chunk, bounds peak memory on large scenes


def fuse_teachers(
    features: Sequence[PointFeatures],
    class_text: torch.Tensor,
    method: str = "guided",
    capability_scores: torch.Tensor | None = None,
    cfg: GuidedFusionConfig | None = None,
    catch_all_index: int | None = None,
    *,
    teacher_names: Sequence[str] | None = None,
    capability_source: str | None = None,
    capability_confusion: torch.Tensor | None = None,
) -> PointFeatures:
    """Fuse per-teacher :class:`PointFeatures` of one scene into one.

    ``class_text`` (K, C) vocabulary text features; ``capability_scores`` (T, K) is required for
    ``guided`` (rows in the order of ``features``, columns in the order of ``class_text``);
    ``capability_confusion`` (T, K, K + 1) confusion counts (:meth:`Capability.confusion_for`) for ``confusion``.
    Returns fused features with ``weights`` (N, T): each teacher's weight per point (0 where unseen).
    """
    cfg = cfg or GuidedFusionConfig()
    if method not in METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; choose from {', '.join(METHODS)}")
    if not features:
        raise ConfigError("fuse_teachers needs at least one teacher's features")
    n, c = features[0].num_points, features[0].dim
    for i, pf in enumerate(features):
        if pf.num_points != n or pf.dim != c:
            raise ConfigError(f"teacher {i} has features {pf.num_points}x{pf.dim}, teacher 0 has {n}x{c}")
    text = torch.as_tensor(class_text, dtype=torch.float32)
    if text.ndim != 2 or text.shape[1] != c:
        raise ConfigError(f"class_text has shape {tuple(text.shape)}, expected (K, {c})")
    n_teachers, k = len(features), text.shape[0]
    text_space = common_text_space([pf.metadata for pf in features], [_teacher_name(pf, i) for i, pf in enumerate(features)])
    scores = None
    if method in ("guided", "confusion"):
        if capability_scores is None:
            raise ConfigError(f"{method} fusion needs capability scores (sas3d capability ... --out cap.json)")
        scores = torch.as_tensor(capability_scores, dtype=torch.float32)
        if scores.shape != (n_teachers, k):
            raise ConfigError(f"capability scores have shape {tuple(scores.shape)}, expected ({n_teachers}, {k})")
        if cfg.weight_normalisation not in ("sum", "paper"):
            raise ConfigError(f"weight_normalisation must be 'sum' or 'paper', got {cfg.weight_normalisation!r}")
        if cfg.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {cfg.temperature}")
    likelihood = unknown = None
    if method == "confusion":
        if capability_confusion is None:
            raise ConfigError("confusion fusion needs the capability's per-class confusion (sas3d capability ... --out cap.json)")
        counts = torch.as_tensor(capability_confusion, dtype=torch.float64)
        if counts.shape != (n_teachers, k, k + 1):
            raise ConfigError(f"capability confusion has shape {tuple(counts.shape)}, expected ({n_teachers}, {k}, {k + 1})")
        if cfg.confusion_model not in confusion_rule.MODELS:
            raise ConfigError(f"confusion_model must be one of {', '.join(confusion_rule.MODELS)}, got {cfg.confusion_model!r}")
        if cfg.confusion_model == "accuracy":
            likelihood = confusion_rule.accuracy_likelihoods(scores, counts, cfg.confusion_floor)
        else:
            likelihood = confusion_rule.likelihoods(counts, cfg.confusion_floor)
        unknown = confusion_rule.unscored(counts)
        if cfg.confusion_rule not in confusion_rule.RULES:
            raise ConfigError(f"confusion_rule must be one of {', '.join(confusion_rule.RULES)}, got {cfg.confusion_rule!r}")
        if cfg.confusion_temperature <= 0:
            raise ConfigError(f"confusion_temperature must be > 0, got {cfg.confusion_temperature}")
    if not 0 <= cfg.dense_teacher < n_teachers:
        raise ConfigError(f"dense_teacher={cfg.dense_teacher} but there are {n_teachers} teachers")

    normalise = _normalises(cfg.normalize_inputs, method)
    seen = torch.stack([pf.seen.to(torch.bool) for pf in features], dim=1)  # (N, T)
    out = torch.zeros(n, c, dtype=torch.float32)
    weights = torch.zeros(n, n_teachers, dtype=torch.float32)
    any_seen = torch.zeros(n, dtype=torch.bool)
    for start in range(0, n, cfg.chunk_size):
        sl = slice(start, min(n, start + cfg.chunk_size))
        f = torch.stack([pf.features[sl].to(torch.float32) for pf in features], dim=1)  # (n, T, C)
        if normalise:
            f = torch.nn.functional.normalize(f, dim=-1)
        # An all-zero feature is "no prediction" (a mask teacher without a mask there): not a vote for class 0.
        valid = seen[sl] & (f.abs().amax(dim=-1) > 0)
        any_seen[sl] = valid.any(dim=1)  # a point no teacher predicts at is unseen, not a zero feature
        w = _weights(f, valid, text, method, scores, cfg, catch_all_index, likelihood, unknown)
        weights[sl] = w
        out[sl] = torch.einsum("nt,ntc->nc", w, f)
    if cfg.normalize_output:
        out = torch.nn.functional.normalize(out, dim=-1) * any_seen[:, None]

    names = list(teacher_names) if teacher_names is not None else [_teacher_name(pf, i) for i, pf in enumerate(features)]
    metadata: dict[str, Any] = {
        "teachers": names,
        "method": method,
        "fusion_config": to_dict(cfg),
        "temperature": cfg.temperature if method == "guided" else None,
        "capability_source": capability_source,
        "catch_all_index": catch_all_index,
    }
    identities = [(pf.metadata or {}).get(TEACHER) for pf in features]
    if all(identities):
        metadata[TEACHERS] = identities
    if text_space is not None:
        metadata[TEXT_SPACE] = text_space
    if any("simulated" in str(nm) for nm in names):
        metadata["note"] = "fused from SIMULATED teachers"
    for key in ("scene", "num_frames"):
        if key in features[0].metadata:
            metadata[key] = features[0].metadata[key]
    return PointFeatures(out.to(torch.float16), any_seen, metadata, weights)


def _normalises(setting: str | bool, method: str) -> bool:
    """Whether ``method`` combines unit teacher features under ``normalize_inputs``."""
    setting = {True: "all", False: "none"}.get(setting, setting) if isinstance(setting, bool) else setting
    if setting not in ("guided", "all", "none"):
        raise ConfigError(f"normalize_inputs must be 'guided', 'all' or 'none', got {setting!r}")
    return setting == "all" or (setting == "guided" and method in UNIT_FEATURE_METHODS)


def _weights(
    f: torch.Tensor,
    seen: torch.Tensor,
    text: torch.Tensor,
    method: str,
    scores: torch.Tensor | None,
    cfg: GuidedFusionConfig,
    catch_all_index: int | None,
    likelihood: torch.Tensor | None = None,
    unknown: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-point teacher weights (n, T), zero for teachers that do not see the point.

    ``scores``: the (T, K) capability (``guided``, ``confusion``); for ``confusion`` also the (T, K, K)
    ``likelihood`` and the (T, K) ``unknown`` classes (no probe evidence: Eq. 7-8 where one is predicted)."""
    seen_f = seen.to(torch.float32)
    if method == "add":
        return seen_f
    if method == "mean":
        return seen_f / seen_f.sum(dim=1, keepdim=True).clamp_min(1.0)
    sims = torch.einsum("ntc,kc->ntk", f, text)  # (n, T, K)
    if method == "linear":
        cos = sims.max(dim=-1).values / f.norm(dim=-1).clamp_min(1e-12)
        # Negative similarity means "matches nothing": such a teacher gets no weight.
        raw = cos.clamp_min(0.0) * seen_f
        return _normalise_or_uniform(raw, seen_f)

    assert scores is not None
    pred = sims.argmax(dim=-1)  # (n, T), Eq. 6
    if method == "confusion":
        assert likelihood is not None and unknown is not None
        w = confusion_rule.teacher_weights(pred, seen, likelihood, cfg.confusion_rule, cfg.confusion_temperature)
        uninformed = (unknown[torch.arange(pred.shape[1])[None, :], pred] & seen).any(dim=1)
        if uninformed.any():
            w[uninformed] = _weights(f[uninformed], seen[uninformed], text, "guided", scores, cfg, catch_all_index)
        return _keep_dense_catch_all(w, seen, pred, cfg, catch_all_index)
    # w[n, t] = sum over seen teachers s of S[t, pred[n, s]]   (Eq. 7)
    per_pair = scores[torch.arange(scores.shape[0])[None, None, :], pred[:, :, None]]  # (n, s, t) = S[t, pred[n,s]]
    w = (per_pair * seen_f[:, :, None]).sum(dim=1) * seen_f  # (n, T)
    if cfg.weight_normalisation == "paper":
        w = w / seen_f.sum(dim=1, keepdim=True).clamp_min(1.0)
    else:
        w = _normalise_or_uniform(w, seen_f)
    logits = (w / cfg.temperature).masked_fill(~seen, float("-inf"))
    w = torch.softmax(logits, dim=1)  # Eq. 8
    w = torch.nan_to_num(w, nan=0.0)  # rows with no seen teacher
    return _keep_dense_catch_all(w, seen, pred, cfg, catch_all_index)


def _keep_dense_catch_all(w: torch.Tensor, seen: torch.Tensor, pred: torch.Tensor, cfg: GuidedFusionConfig,
                          catch_all_index: int | None) -> torch.Tensor:
    """Where the dense teacher predicts the catch-all class, its feature alone (official SAS code detail)."""
    if cfg.keep_dense_catch_all and catch_all_index is not None:
        d = cfg.dense_teacher
        keep = seen[:, d] & (pred[:, d] == catch_all_index)
        if keep.any():
            one_hot = torch.zeros_like(w[keep])
            one_hot[:, d] = 1.0
            w[keep] = one_hot
    return w


def _normalise_or_uniform(w: torch.Tensor, seen_f: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sum; rows summing to 0 become uniform over the seen teachers."""
    total = w.sum(dim=1, keepdim=True)
    uniform = seen_f / seen_f.sum(dim=1, keepdim=True).clamp_min(1.0)
    return torch.where(total > 0, w / total.clamp_min(1e-12), uniform)


def _teacher_name(pf: PointFeatures, i: int) -> str:
    meta = pf.metadata or {}
    for key in ("teacher", "teachers"):
        if key in meta:
            value = meta[key]
            return ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"teacher{i}"
