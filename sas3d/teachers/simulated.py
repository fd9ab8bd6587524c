"""Simulated 2D teachers built from ground-truth label renders (for the embedded default and tests).

Every output of these teachers is simulated: names are ``simulated-<profile>`` and the metadata says so.
A :class:`SimulatedProfile` (YAML in ``sas3d/configs/teachers_simulated.yaml``) documents each
teacher's per-class behaviour; the two shipped profiles mimic the SAS pair and are complementary:

* ``lseg`` (dense, LSeg-like): good at stuff/large classes, confuses small/thin objects into their
  surroundings (picture->wall, counter->cabinet, desk->table, chair->sofa, ...), jittered boundaries.
* ``seem`` (mask, SEEM-like): object-centric, good where ``lseg`` is weak, but confuses some large
  classes (sofa->chair, table->desk, bed->sofa, ...), its wall/floor masks bleed into neighbours, and it
  misses some segments (no mask -> zero features).

How a label image becomes a prediction (:meth:`SimulatedTeacher.predict_label_map`):

1. GT connected components per class are the segments.
2. Systematic confusion: each segment's predicted class is drawn from ``confusions[true]`` with a
   uniform number hashed from (profile, seed, scope, class, quantised mean colour). The same object
   therefore looks the same in every view and gets the same (wrong) label, so these errors survive
   multi-view fusion -- like a real teacher's weaknesses. ``scope`` is the scene folder for frames.
3. Per-view noise: with probability ``view_noise[true]`` a segment is relabelled to a random other
   class in this view only (rng seeded by zlib.crc32 of (profile, seed, frame key), never ``hash()``).
4. Dropout: with probability ``dropout[true]`` a segment gets no prediction (mask teachers: no mask ->
   zero features; dense teachers: the catch-all class).
5. GT-unknown pixels (255): dense teachers predict the label set's catch-all class (or, without one,
   the nearest labelled pixel's class); mask teachers give them no mask.
6. ``bleed_px[class]``: that class's predicted region is dilated into its neighbours (masks bleed).
7. ``boundary_px``: pixels within that distance of a predicted boundary take the label of a random
   pixel up to that far away (jagged edges).

So per class: P(correct) ~= 1 - sum(confusions[c]) - view_noise[c] - dropout[c] (per segment).

Domain gap on capability probes: a real teacher behaves differently on generated images (SAS 3.2's
capability probes) than on scan frames, so the capability measured on probes only approximates its
accuracy on the scenes. Frames with ``domain == "probe"`` (set by capability's ``_frame_for``) get, per
class c, a systematic-confusion mass ``clip(sum(confusions[c]) + u_c, 0, 1)`` with
``u_c = probe_gap * (2 U - 1)``, U uniform hashed from (profile name, ``probe_gap_seed``, class name)
alone -- never from labels or measured IoUs. A shrinking mass scales the class's confusion targets down;
a growing one scales them up, or, for a class without targets, goes to one other class of the label set
(not the catch-all) hashed from the same key. Each segment keeps its hashed uniform, so a class whose
shift is 0 predicts exactly as in a scene, and scene frames (``domain == "scene"``) are untouched.

Dense output: the shared text encoder's embedding of ``prompt_for(predicted class)`` per pixel plus
N(0, ``feature_noise``) per channel, renormalised. Mask output: connected regions of the predicted
label map are masks labelled with the class name, captioned by :class:`OfflineCaptioner` from the
colour image and aligned via :func:`masks_to_dense` -- the real alignment-via-text path.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from sas3d.config import RECIPE_DIR, from_dict, load_yaml, to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.scene.types import FRAME_DOMAINS, IGNORE_LABEL, Frame
from sas3d.teachers.alignment import encode_prompts, masks_to_dense
from sas3d.teachers.base import Teacher
from sas3d.teachers.cache import maybe_cached
from sas3d.teachers.captioner import OfflineCaptioner
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import LabelSet, available, get_label_set

PROFILES_FILE = RECIPE_DIR / "teachers_simulated.yaml"
# Largest per-class shift of the systematic-confusion probability between probe images and scenes. A
# modelling choice (a moderate gap: a fifth of the probability range either way), fixed before any run
# and not fitted to any measured figure; 0 turns the gap off (probes then behave exactly like scenes).
DEFAULT_PROBE_GAP = 0.2


@dataclass
class SimulatedProfile:
    """Per-class behaviour of one simulated teacher (all probabilities are per segment)."""

    name: str = "custom"
    kind: str = "dense"  # "dense" (per-pixel features, LSeg-like) | "mask" (masks + labels, SEEM-like)
    description: str = ""
    confusions: dict[str, dict[str, float]] = field(default_factory=dict)  # true -> {predicted: prob}, systematic
    view_noise: dict[str, float] = field(default_factory=dict)  # per-view random relabel prob per class
    default_view_noise: float = 0.0  # for classes not in view_noise
    dropout: dict[str, float] = field(default_factory=dict)  # prob a segment gets no prediction
    default_dropout: float = 0.0
    boundary_px: int = 0  # boundary jitter width in pixels (at label-render resolution)
    bleed_px: dict[str, int] = field(default_factory=dict)  # class -> dilation of its predicted region, px
    feature_noise: float = 0.02  # sigma of Gaussian noise per channel before renormalising (dense)
    colour_bin: int = 32  # RGB quantisation step of the appearance key of systematic errors
    min_mask_px: int = 20  # mask teachers drop predicted regions smaller than this (like SAM's min area)
    seed: int = 0
    probe_gap: float = DEFAULT_PROBE_GAP  # max |per-class shift| of confusion mass on probe images (module doc)
    probe_gap_seed: int = 0  # seeds the per-class shifts and the targets of new confusions on probes

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "mask"):
            raise ConfigError(f"simulated profile {self.name!r}: kind must be 'dense' or 'mask', got {self.kind!r}")
        if not 0.0 <= self.probe_gap <= 1.0:
            raise ConfigError(f"simulated profile {self.name!r}: probe_gap is a probability shift in [0, 1], got {self.probe_gap}")
        known = _known_class_names()
        names = set(self.confusions) | set(self.view_noise) | set(self.dropout) | set(self.bleed_px)
        names |= {p for row in self.confusions.values() for p in row}
        unknown = sorted(names - known)
        if unknown:
            raise ConfigError(f"simulated profile {self.name!r}: unknown class name(s) {unknown}")
        for true, row in self.confusions.items():
            total = sum(row.values()) + self.view_noise.get(true, self.default_view_noise) + self.dropout.get(true, self.default_dropout)
            if any(p < 0 for p in row.values()) or total > 1.0 + 1e-9:
                raise ConfigError(f"simulated profile {self.name!r}: probabilities for {true!r} must be >= 0 and sum to <= 1")


@lru_cache(maxsize=1)
def _known_class_names() -> frozenset[str]:
    # Profiles are written in ScanNet20 names but may be reused with other sets; typos still fail.
    return frozenset(c for name in available() for c in get_label_set(name).classes)


def load_profile(spec: str) -> SimulatedProfile:
    """A built-in profile name (``lseg``, ``seem``) or a YAML path (``file.yaml`` or ``file.yaml#name``)."""
    path_text, _, wanted = spec.partition("#")
    path = Path(path_text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        data = load_yaml(path)
    else:
        data, wanted = load_yaml(PROFILES_FILE), spec
    profiles = data.get("profiles")
    if profiles is None:  # a file holding one profile's fields
        return from_dict(SimulatedProfile, data, str(path))
    if not wanted:
        if len(profiles) != 1:
            raise ConfigError(f"{path}: holds profiles {sorted(profiles)}; choose one with {path}#NAME")
        wanted = next(iter(profiles))
    if wanted not in profiles:
        raise ConfigError(f"unknown simulated teacher profile {wanted!r}; known: {sorted(profiles)}")
    return from_dict(SimulatedProfile, {"name": wanted, **profiles[wanted]}, f"profiles.{wanted}")


def _crc(*parts: Any) -> int:
    return zlib.crc32(":".join(str(p) for p in parts).encode())


class SimulatedTeacher(Teacher):
    """A teacher that turns ground-truth label renders into realistically wrong predictions (simulated)."""

    def __init__(self, profile: SimulatedProfile, text_encoder: TextEncoder, label_set: LabelSet | str = "scannet20", seed: int = 0):
        self.profile = profile
        self.text_encoder = text_encoder
        self.label_set = get_label_set(label_set) if isinstance(label_set, str) else label_set
        self.seed = int(seed)
        self.name = f"simulated-{profile.name}"
        self.captioner = OfflineCaptioner()
        classes = self.label_set.classes
        k = len(classes)
        idx = {c: i for i, c in enumerate(classes)}
        # Per true class: cumulative systematic-confusion table over predicted indices, noise, dropout.
        self._confusion_targets: list[np.ndarray] = []
        self._confusion_cum: list[np.ndarray] = []
        for c in classes:
            row = {idx[p]: v for p, v in profile.confusions.get(c, {}).items() if p in idx and p != c}
            self._confusion_targets.append(np.array(list(row), dtype=np.int64))
            self._confusion_cum.append(np.cumsum(list(row.values())) if row else np.zeros(0))
        self._view_noise = np.array([profile.view_noise.get(c, profile.default_view_noise) for c in classes])
        self._dropout = np.array([profile.dropout.get(c, profile.default_dropout) for c in classes])
        self._bleed = [(idx[c], int(px)) for c, px in profile.bleed_px.items() if c in idx and px > 0]
        self._k = k
        # Probe-domain tables (module doc): the scene tables where a class's shift is 0.
        self.probe_shift = np.array([self._probe_shift(c) for c in classes])
        self._probe_targets, self._probe_cum = [], []
        for i, c in enumerate(classes):
            targets, cum = self._confusion_targets[i], self._confusion_cum[i]
            if self.probe_shift[i] != 0:
                targets, cum = self._shifted_confusions(c, targets, cum, float(self.probe_shift[i]))
            self._probe_targets.append(targets)
            self._probe_cum.append(cum)

    def _probe_shift(self, cls: str) -> float:
        """u_c in [-probe_gap, +probe_gap], from the profile name, probe_gap_seed and the class name only."""
        p = self.profile
        return p.probe_gap * (2.0 * _crc("probe_gap", p.name, p.probe_gap_seed, cls) / 2**32 - 1.0)

    def _shifted_confusions(self, cls: str, targets: np.ndarray, cum: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
        """(targets, cumulative probabilities) of ``cls`` on probes: its confusion mass moved by ``shift``."""
        mass = float(cum[-1]) if len(cum) else 0.0
        new_mass = float(np.clip(mass + shift, 0.0, 1.0))
        if mass > 0:
            return targets, cum * (new_mass / mass)
        p = self.profile
        others = [j for j, c in enumerate(self.label_set.classes) if c != cls and j != self.label_set.catch_all_index]
        if not others:
            return targets, cum
        target = others[_crc("probe_gap_target", p.name, p.probe_gap_seed, cls) % len(others)]
        return np.array([target], dtype=np.int64), np.array([new_mass])

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "simulated": True,
            "kind": self.profile.kind,
            "profile": to_dict(self.profile),
            "label_set": self.label_set.name,
            "seed": self.seed,
            "text_encoder": getattr(self.text_encoder, "name", type(self.text_encoder).__name__),
        }

    @property
    def identity(self) -> str:
        """Profile name, label set, seed and a hash of every profile field: another profile is another teacher."""
        import hashlib
        import json

        digest = hashlib.sha256(json.dumps(to_dict(self.profile), sort_keys=True).encode()).hexdigest()[:8]
        return f"simulated:{self.profile.name} ({self.label_set.name}, seed {self.seed}, profile sha256:{digest})"

    # ---- label-level simulation -------------------------------------------------------------
    def predict_label_map(self, image: np.ndarray, gt_labels: np.ndarray, key: str, scope: str = "", domain: str = "scene") -> np.ndarray:
        """(H, W) int64 predicted label-set indices; -1 = no prediction (mask teachers only).
        ``domain``: "scene" or "probe" (a capability image: confusions shifted, module doc)."""
        if domain not in FRAME_DOMAINS:
            raise InputError(None, f"frame domain must be one of {FRAME_DOMAINS}, got {domain!r}")
        targets, cums = (self._probe_targets, self._probe_cum) if domain == "probe" else (self._confusion_targets, self._confusion_cum)
        gt = np.asarray(gt_labels).astype(np.int64)
        if gt.ndim != 2:
            raise InputError(None, f"label image must be 2-D, got shape {gt.shape}")
        bad = (gt != IGNORE_LABEL) & ((gt < 0) | (gt >= self._k))
        if bad.any():
            raise InputError(None, f"label image has ids {sorted(set(gt[bad].tolist()))[:5]} outside {self.label_set.name} (0..{self._k - 1}, 255 = unknown)")
        image = _fit_image(image, gt.shape)
        p = self.profile
        rng = np.random.default_rng(_crc(p.name, p.seed, self.seed, key))

        seg = np.full(gt.shape, -1, dtype=np.int64)
        seg_class: list[int] = []
        for c in np.unique(gt[gt != IGNORE_LABEL]):
            comp, n = ndimage.label(gt == c)
            seg[comp > 0] = comp[comp > 0] - 1 + len(seg_class)
            seg_class += [int(c)] * n
        n_seg = len(seg_class)
        seg_pred = np.array(seg_class, dtype=np.int64)
        if n_seg:
            index = np.arange(n_seg)
            labels = np.where(seg >= 0, seg, n_seg)  # ndimage wants non-negative labels
            colour = np.stack([ndimage.mean(image[..., ch].astype(np.float64), labels, index) for ch in range(3)], 1)
            bins = (colour // p.colour_bin).astype(np.int64)
            for s, c in enumerate(seg_class):
                cum = cums[c]
                if len(cum):
                    u = _crc(p.name, p.seed, self.seed, scope, c, *bins[s]) / 2**32
                    hit = int(np.searchsorted(cum, u, side="right"))
                    if hit < len(cum):
                        seg_pred[s] = targets[c][hit]
            # Draw all per-view randomness for every segment so results do not depend on the profile's zeros.
            u_noise, u_drop = rng.random(n_seg), rng.random(n_seg)
            other = rng.integers(0, self._k - 1, n_seg)
            classes = np.array(seg_class)
            relabel = u_noise < self._view_noise[classes]
            seg_pred[relabel] = np.where(other >= classes, other + 1, other)[relabel]  # uniform over the others
            seg_pred[u_drop < self._dropout[classes]] = -1

        pred = np.where(seg >= 0, seg_pred[seg.clip(min=0)] if n_seg else -1, -1)
        dropped = (seg >= 0) & (pred < 0)
        unknown = seg < 0
        if p.kind == "dense":
            pred = self._fill_dense(pred, unknown | dropped)
        for c, px in self._bleed:
            grown = ndimage.binary_dilation(pred == c, iterations=px)
            pred[grown] = c
        if p.boundary_px > 0:
            pred = _jitter_boundaries(pred, p.boundary_px, rng)
        return pred

    def _fill_dense(self, pred: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """Dense teachers always predict something: the catch-all class, else the nearest prediction."""
        if not holes.any():
            return pred
        catch_all = self.label_set.catch_all_index
        pred = pred.copy()
        if catch_all is not None:
            pred[holes] = catch_all
        elif (~holes).any():
            _, (ri, ci) = ndimage.distance_transform_edt(holes, return_indices=True)
            pred = pred[ri, ci]
        else:
            pred[:] = 0
        return pred

    # ---- feature maps ------------------------------------------------------------------------
    def predict_labels(self, image: np.ndarray, gt_labels: np.ndarray, key: str, scope: str = "", domain: str = "scene") -> np.ndarray:
        """(H, W, C) float32 simulated features for an (image, GT label image) pair in ``domain``."""
        pred = self.predict_label_map(image, gt_labels, key, scope, domain)
        if self.profile.kind == "dense":
            text = encode_prompts(self.text_encoder, self.label_set.prompts()).numpy()
            out = text[pred.clip(min=0)]
            if self.profile.feature_noise > 0:
                rng = np.random.default_rng(_crc("features", self.profile.name, self.profile.seed, self.seed, key))
                out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(self.profile.feature_noise)
                out /= np.sqrt(np.einsum("hwc,hwc->hw", out, out))[..., None].clip(min=1e-6)
            return out.astype(np.float32)
        segment_ids = np.full(pred.shape, -1, dtype=np.int64)
        segments: dict[int, dict[str, Any]] = {}
        for c in np.unique(pred[pred >= 0]):
            comp, n = ndimage.label(pred == c)
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            for j in range(1, n + 1):
                if sizes[j] >= self.profile.min_mask_px:
                    sid = len(segments)
                    segment_ids[comp == j] = sid
                    segments[sid] = {"label": self.label_set.classes[int(c)], "caption": None}
        return masks_to_dense(segment_ids, segments, self.text_encoder, image=_fit_image(image, pred.shape), captioner=self.captioner)

    def predict(self, frame: Frame) -> np.ndarray:
        if frame.label_path is None:
            raise InputError(frame.color_path, f"{self.name} needs a ground-truth label render (label/<frame>.png) for this frame")
        labels = _read_png(frame.label_path)
        image = _read_png(frame.color_path, rgb=True)
        try:
            # Scene folder (<scene>/color/N.jpg) scopes the systematic errors: different per scene, same per object.
            return self.predict_labels(image, labels, frame.stem, scope=frame.color_path.parent.parent.name, domain=frame.domain)
        except InputError as exc:
            raise InputError(frame.label_path, exc.problem) from None


def _read_png(path: Path, rgb: bool = False) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")) if rgb else np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read image ({exc})") from None


def _fit_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(None, f"colour image must be (H, W, 3), got {image.shape}")
    if image.shape[:2] == tuple(shape):
        return image.astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(image.astype(np.uint8)).resize((shape[1], shape[0]), Image.BILINEAR))


def _jitter_boundaries(pred: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Pixels within ``width`` of a label change take the label of a random pixel up to ``width`` away."""
    size = 2 * width + 1
    near = ndimage.maximum_filter(pred, size=size) != ndimage.minimum_filter(pred, size=size)
    rows, cols = np.nonzero(near)
    dr = rng.integers(-width, width + 1, rows.shape)
    dc = rng.integers(-width, width + 1, cols.shape)
    out = pred.copy()
    out[rows, cols] = pred[(rows + dr).clip(0, pred.shape[0] - 1), (cols + dc).clip(0, pred.shape[1] - 1)]
    return out


def build_simulated(spec: str, text_encoder: TextEncoder | None = None, label_set: LabelSet | str = "scannet20", seed: int = 0) -> SimulatedTeacher:
    """Convenience: ``build_simulated("lseg")`` with the offline MiniLM encoder by default."""
    if text_encoder is None:
        from sas3d.text.encoders import build_text_encoder

        text_encoder = build_text_encoder("minilm")
    return SimulatedTeacher(load_profile(spec), text_encoder, label_set, seed)


def from_spec(argument: str, context: Any) -> Teacher:
    """Registry factory: ``simulated:lseg``, ``simulated:seem`` or ``simulated:path/profile.yaml[#name]``."""
    if not argument:
        raise ConfigError("simulated teacher needs a profile: simulated:lseg, simulated:seem or simulated:FILE.yaml")
    teacher = build_simulated(argument, context.text_encoder, context.label_set, context.seed)
    return maybe_cached(teacher, context)
