"""Annotation-free model capability (SAS 3.2, Eq. 3-5).

For every vocabulary class, a generator makes images with (pseudo) masks of that class. Each teacher
predicts a per-pixel feature map; its mask for the class is the set of pixels whose argmax over the
vocabulary text features is the class. Capability ``S[teacher, class] = sum of intersections / sum of
unions`` over that class's images; the catch-all class gets 0.

Beyond the paper, the same predictions also give each teacher's per-class *confusion*: pixel counts of
(true class of the image's mask, predicted class) over the mask pixels, with a last column for pixels
where the teacher predicts nothing (an all-zero feature: a mask teacher without a mask). Only mask
pixels are counted: the background's true class is unknown (unlabelled in procedural images, any scene
content in generated photos), so it cannot say what a prediction means. Fusion rules that model
"teacher t's sofa is usually a chair" read it (``sas3d.fusion.confusion``).

Each generated image is saved as a PNG (+ a uint16 ground-truth label PNG in the teachers' label set,
255 for the background and for classes the label set lacks) in the work folder, and teachers see it as
a :class:`~sas3d.scene.types.Frame`, the same interface as in a real scene. Per-image counts are kept
in ``progress.json`` (written atomically after every image) so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from sas3d.capability.generators import Generator
from sas3d.config import to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.identity import TEACHERS, TEXT_SPACE, text_space_of
from sas3d.scene.types import IGNORE_LABEL, Frame
from sas3d.teachers.base import Teacher
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import CATCH_ALL, LabelSet, get_label_set, prompt_for
from sas3d.utils.atomic import atomic_path, write_json_atomic

VOCABULARY_ALIASES = {"indoor": "vocabulary_indoor", "outdoor": "vocabulary_outdoor"}  # SAS Table 9


@dataclass
class CapabilityConfig:
    """Capability construction settings; defaults are the official SAS code values."""

    images_per_class: int = 50  # SAS code: 50 generated images per class
    num_inference_steps: int = 50  # SAS code: 50 diffusion steps
    guidance_scale: float = 7.0  # SAS code: classifier-free guidance 7
    prompt_template: str = "a good photo of a {cls} in a room"  # SAS code; paper: "a good photo of {cls}"
    attention_threshold: float = 0.7  # SAS code: coarse mask = normalised cross-attention > 0.7
    attention_resolutions: tuple[int, ...] = (16, 32, 64)  # SAS code: UNet layers at these latent sizes
    max_sam_points: int = 3  # SAS code: <= 3 positive points, one per largest coarse component
    image_size: int = 512  # SD v1 output size; the procedural generator uses procedural_size
    procedural_size: int = 128  # offline generator image side (pixels)
    seed_offset: int = 0  # seed of image i = seed_offset + i (SAS code: seed = image index)


def resolve_vocabulary(name: str) -> LabelSet:
    """``indoor`` / ``outdoor`` (SAS Table 9 vocabularies) or any label-set name or .txt path."""
    return get_label_set(VOCABULARY_ALIASES.get(name, name))


@dataclass
class Capability:
    """Capability scores of T teachers on K classes, with the per-class counts that produced them."""

    teachers: list[str]
    classes: list[str]
    scores: np.ndarray  # (T, K) float, S[t, k] in [0, 1]
    config: dict[str, Any] = field(default_factory=dict)
    intersections: np.ndarray | None = None  # (T, K) summed pixel counts
    unions: np.ndarray | None = None  # (T, K)
    images: np.ndarray | None = None  # (K,) images scored per class
    # (T, K, K + 1) mask-pixel counts [teacher, true class, predicted class]; column K = no prediction.
    # Optional: files written before it existed load without it.
    confusion: np.ndarray | None = None
    source: str | None = None  # the file it was loaded from (for error messages); not saved

    def save(self, path: str | Path) -> None:
        """Write JSON atomically."""
        data = {
            "teachers": list(self.teachers),
            "classes": list(self.classes),
            "scores": np.asarray(self.scores, dtype=float).round(6).tolist(),
            "config": self.config,
        }
        for key in ("intersections", "unions", "images", "confusion"):
            value = getattr(self, key)
            if value is not None:
                data[key] = np.asarray(value).tolist()
        if any(t.startswith("simulated") for t in self.teachers):
            data["note"] = "scores of SIMULATED teachers"
        write_json_atomic(path, data)

    @classmethod
    def load(cls, path: str | Path) -> "Capability":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(path, "capability file not found") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, f"not a readable capability JSON ({exc})") from exc
        try:
            scores = np.asarray(data["scores"], dtype=np.float64)
            teachers, classes = list(data["teachers"]), list(data["classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"capability JSON lacks teachers/classes/scores ({exc})") from exc
        if scores.shape != (len(teachers), len(classes)):
            raise InputError(path, f"scores shape {scores.shape} != ({len(teachers)} teachers, {len(classes)} classes)")
        if not np.isfinite(scores).all():
            bad = [(teachers[t], classes[k]) for t, k in zip(*np.nonzero(~np.isfinite(scores)))]
            raise InputError(path, f"{len(bad)} capability scores are NaN/inf (first: teacher {bad[0][0]!r}, class {bad[0][1]!r})")
        if scores.size and (scores.min() < 0 or scores.max() > 1):
            raise InputError(path, f"capability scores are per-class IoUs in [0, 1]; found values in [{scores.min():g}, {scores.max():g}]")
        if len(set(teachers)) != len(teachers) or len(set(classes)) != len(classes):
            raise InputError(path, "capability file names a teacher or a class twice")
        extra = {k: np.asarray(data[k]) for k in ("intersections", "unions", "images") if k in data}
        if "confusion" in data:
            extra["confusion"] = _checked_confusion(path, data["confusion"], len(teachers), len(classes))
        return cls(teachers, classes, scores, data.get("config", {}), **extra, source=str(path))

    @property
    def text_space(self) -> str | None:
        """The text space the scores were measured in (None in files written before it was recorded)."""
        return self.config.get(TEXT_SPACE)

    def identity_of(self, teacher: str) -> str | None:
        """The identity recorded for the row named ``teacher`` (None in older files)."""
        identities = self.config.get(TEACHERS)
        if not identities or len(identities) != len(self.teachers) or teacher not in self.teachers:
            return None
        return identities[self.teachers.index(teacher)]

    @property
    def catch_all_index(self) -> int | None:
        return next((i for i, c in enumerate(self.classes) if c in CATCH_ALL), None)

    def select(self, teachers: Sequence[str]) -> np.ndarray:
        """Score rows for ``teachers`` in that order (e.g. the order of ``sas3d fuse --teacher``)."""
        return np.stack([self.scores[self._row(t)] for t in teachers])

    def scores_for(self, teachers: Sequence[str], classes: Sequence[str]) -> np.ndarray:
        """(T, K) scores of ``teachers`` on ``classes``, in those orders; a class the file does not score gets 0."""
        rows = self.select(teachers)
        columns = [rows[:, self.classes.index(c)] if c in self.classes else np.zeros(len(rows)) for c in classes]
        return np.stack(columns, axis=1)

    def bind(self, names: Sequence[str], identities: Sequence[str | None], classes: Sequence[str], text_space: str | None,
             path: str | Path | None = None, specs: Sequence[str] | None = None) -> list[str]:
        """The rows of teachers ``names`` for a fusion over ``classes``, checked (for :meth:`scores_for`, :meth:`confusion_for`).

        Rows are bound by identity only, never by position (another --teacher order would swap them): a
        row is the one named by the teacher's name, or by its spec (``specs``: files written by older
        versions stored specs), and where the file records the row's identity it must be the teacher's.
        The file must score every class of ``classes`` but the catch-all (SAS gives it no capability:
        :func:`compute_capability` scores it 0, and a vocabulary such as ``indoor`` does not list it;
        :meth:`scores_for` / :meth:`confusion_for` give an unscored class 0 / no evidence) and be
        measured in ``text_space``. Every refusal is an InputError naming ``path`` and both sides.
        """
        where = Path(path) if path is not None else None
        if text_space is not None and self.text_space is not None and self.text_space != text_space:
            raise InputError(where, f"the capability scores were measured in the text space {self.text_space!r}, but the "
                                    f"fusion's text encoder is {text_space!r}; score the teachers again with that --text-encoder")
        missing = [c for c in classes if c not in self.classes and c not in CATCH_ALL]
        if missing:
            more = " ..." if len(missing) > 6 else ""
            raise InputError(where, f"scores classes {self.classes[:6]}{' ...' if len(self.classes) > 6 else ''}, not the fusion "
                                    f"vocabulary: no score for {missing[:6]}{more} (score that vocabulary, or pick it with --labelset)")
        rows = []
        for i, (name, identity) in enumerate(zip(names, identities)):
            spec = specs[i] if specs is not None else None
            found = [n for n in (name, spec) if n is not None and n in self.teachers]
            if not found:
                raise InputError(where, f"scores teachers {self.teachers}; teacher {spec or name!r} (name {name!r}) is not among "
                                        "them (rename the rows, or score this teacher with `sas3d capability`)")
            recorded = self.identity_of(found[0])
            if recorded is not None and identity is not None and recorded != identity:
                raise InputError(where, f"row {found[0]!r} scores the teacher {recorded!r}, but --teacher {spec or name} is {identity!r}")
            rows.append(found[0])
        return rows

    def confusion_for(self, teachers: Sequence[str], classes: Sequence[str]) -> np.ndarray:
        """(T, K, K + 1) confusion counts of ``teachers`` on ``classes``, in those orders.

        ``[t, i, j]`` = mask pixels of true class ``classes[i]`` that teacher t predicted as ``classes[j]``;
        column K gathers everything else (no prediction, or a class outside ``classes``). A class the
        file does not score has an all-zero row (no evidence about it)."""
        confusion = self.require_confusion()
        rows = np.stack([confusion[self._row(t)] for t in teachers])
        known = [self.classes.index(c) if c in self.classes else None for c in classes]
        out = np.zeros((len(teachers), len(classes), len(classes) + 1), dtype=np.float64)
        for i, src in enumerate(known):
            if src is None:
                continue
            row = rows[:, src, :].astype(np.float64)  # (T, K_file + 1)
            for j, col in enumerate(known):
                if col is not None:
                    out[:, i, j] = row[:, col]
            out[:, i, -1] = row.sum(axis=1) - out[:, i, :-1].sum(axis=1)
        return out

    def require_confusion(self) -> np.ndarray:
        """The (T, K, K + 1) confusion, or a clear error naming the file that lacks it."""
        if self.confusion is None:
            raise InputError(self.source, "capability file has no per-class confusion (written before it was recorded); "
                             "rerun `sas3d capability` with the same --workdir (it re-scores from the saved images) to add it")
        return self.confusion

    def _row(self, teacher: str) -> int:
        if teacher not in self.teachers:
            raise ConfigError(f"teacher {teacher!r} has no capability scores; the file has {self.teachers}")
        return self.teachers.index(teacher)

    def class_text(self, text_encoder: TextEncoder) -> torch.Tensor:
        """(K, C) text features of the capability vocabulary, encoded as the fusion prompts them."""
        return text_encoder.encode([prompt_for(c) for c in self.classes])


def mask_counts(teacher_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two boolean masks of the same shape."""
    if teacher_mask.shape != gt_mask.shape:
        raise ValueError(f"mask shapes differ: {teacher_mask.shape} vs {gt_mask.shape}")
    return int(np.logical_and(teacher_mask, gt_mask).sum()), int(np.logical_or(teacher_mask, gt_mask).sum())


def teacher_class_map(feature_map: np.ndarray, class_text: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Per-pixel argmax over the vocabulary of an (h, w, C) teacher map, resized (nearest) to (height, width).

    A pixel whose feature is all zero holds no prediction (a mask teacher without a mask there) and gets
    -1: it claims no class, as in fusion (:mod:`sas3d.fusion.multiview`), instead of class 0.
    """
    fmap = np.asarray(feature_map, dtype=np.float32)
    if fmap.ndim != 3 or fmap.shape[2] != class_text.shape[1]:
        raise ValueError(f"teacher map shape {fmap.shape} does not match text dim {class_text.shape[1]}")
    flat = torch.from_numpy(fmap).reshape(-1, fmap.shape[2])
    pred = (flat @ class_text.T).argmax(dim=1)
    pred[~(flat != 0).any(dim=1)] = -1
    pred = pred.reshape(fmap.shape[0], fmap.shape[1]).numpy()
    if pred.shape != (height, width):
        rows = (np.arange(height) * pred.shape[0] // height).clip(0, pred.shape[0] - 1)
        cols = (np.arange(width) * pred.shape[1] // width).clip(0, pred.shape[1] - 1)
        pred = pred[rows[:, None], cols[None, :]]
    return pred


def compute_capability(
    teachers: Sequence[Teacher],
    generator: Generator,
    vocabulary: str | LabelSet,
    images_per_class: int,
    text_encoder: TextEncoder,
    workdir: str | Path,
    *,
    teacher_names: Sequence[str] | None = None,
    label_set: str = "scannet20",
    config: CapabilityConfig | None = None,
    progress: bool = True,
    frame_source: Callable[[str, int, int], tuple[Frame, np.ndarray]] | None = None,
) -> Capability:
    """Score every teacher on ``images_per_class`` generated images of every vocabulary class.

    ``label_set`` is the label set of the ground-truth label PNGs given to teachers that read them
    (simulated teachers). Resumes from ``workdir/progress.json`` when it matches this run's setup.
    ``frame_source(class, seed, index) -> (frame, mask)`` supplies the images (default: ``generator``
    draws them into ``workdir``); exported probes (:mod:`sas3d.capability.probes`) read theirs back.
    """
    from tqdm import tqdm

    cfg = config or CapabilityConfig(images_per_class=images_per_class)
    vocab = vocabulary if isinstance(vocabulary, LabelSet) else resolve_vocabulary(vocabulary)
    names = list(teacher_names) if teacher_names is not None else [getattr(t, "name", f"teacher{i}") for i, t in enumerate(teachers)]
    if len(set(names)) != len(names):
        raise ConfigError(f"teacher names must be unique, got {names}")
    gt_set = get_label_set(label_set)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    class_text = text_encoder.encode([prompt_for(c) for c in vocab.classes])
    setup = {
        "generator": getattr(generator, "name", type(generator).__name__),
        "vocabulary": vocab.name,
        "classes": list(vocab.classes),
        "text_encoder": getattr(text_encoder, "name", type(text_encoder).__name__),
        "label_set": gt_set.name,
        "seed_offset": cfg.seed_offset,
    }
    progress_path = workdir / "progress.json"
    identities = {nm: getattr(t, "identity", nm) for t, nm in zip(teachers, names)}
    done, identities = _load_progress(progress_path, setup, identities)
    jobs = probe_jobs(vocab, images_per_class)

    def generated(cls: str, seed: int, index: int) -> tuple[Frame, np.ndarray]:
        return _frame_for(generator, cls, seed, index, workdir, gt_set)

    frames = frame_source or generated

    bar = tqdm(jobs, desc="capability", unit="img", disable=not progress)
    for k, cls, i in bar:
        key = f"{cls}/{i}"
        # An entry without its confusion counts (written before they were recorded) is scored again.
        todo = [j for j, nm in enumerate(names) if len(done.get(key, {}).get(nm, ())) < 3]
        if not todo:
            continue
        bar.set_postfix_str(cls)
        frame, gt = frames(cls, cfg.seed_offset + i, i)
        entry = done.setdefault(key, {})
        for j in todo:
            fmap = teachers[j].predict(frame)
            pred = teacher_class_map(fmap, class_text, frame.height, frame.width)  # -1: no prediction, claims no class
            entry[names[j]] = [*mask_counts(pred == k, gt), _predicted_counts(pred[gt])]
        write_json_atomic(progress_path, {"setup": setup, "identities": identities, "done": done})
    bar.close()

    n_t, n_k = len(names), len(vocab)
    inter = np.zeros((n_t, n_k), dtype=np.int64)
    union = np.zeros((n_t, n_k), dtype=np.int64)
    counts = np.zeros(n_k, dtype=np.int64)
    confusion = np.zeros((n_t, n_k, n_k + 1), dtype=np.int64)
    for k, cls, i in jobs:
        entry = done[f"{cls}/{i}"]
        counts[k] += 1
        for j, nm in enumerate(names):
            inter[j, k] += entry[nm][0]
            union[j, k] += entry[nm][1]
            for predicted, n in entry[nm][2].items():
                confusion[j, k, int(predicted) if int(predicted) >= 0 else n_k] += n
    scores = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    for k, cls in enumerate(vocab.classes):
        if cls in CATCH_ALL:
            scores[:, k] = 0.0  # SAS: the catch-all class gets no capability
    meta = {"capability_config": to_dict(cfg), **setup, "images_per_class": images_per_class,
            TEXT_SPACE: text_space_of(text_encoder), TEACHERS: [getattr(t, "identity", n) for t, n in zip(teachers, names)]}
    return Capability(names, list(vocab.classes), scores, meta, inter, union, counts, confusion)


def _predicted_counts(pred: np.ndarray) -> dict[str, int]:
    """{predicted class index (-1 = no prediction): pixel count} of the predictions on one image's mask."""
    values, n = np.unique(pred, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, n)}


def _checked_confusion(path: Path, value: Any, n_teachers: int, n_classes: int) -> np.ndarray:
    """The ``confusion`` field of a capability file as (T, K, K + 1) non-negative counts, or a clear error."""
    try:
        confusion = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"capability confusion is not a numeric array ({exc})") from None
    if confusion.shape != (n_teachers, n_classes, n_classes + 1):
        raise InputError(path, f"confusion shape {confusion.shape} != ({n_teachers} teachers, {n_classes} classes, {n_classes + 1})")
    if not np.isfinite(confusion).all() or (confusion < 0).any():
        raise InputError(path, "capability confusion holds negative or non-finite counts")
    return confusion


def probe_jobs(vocabulary: LabelSet, images_per_class: int) -> list[tuple[int, str, int]]:
    """(class index, class, image index) of every probe image; the catch-all class gets none."""
    return [(k, c, i) for k, c in enumerate(vocabulary.classes) if c not in CATCH_ALL for i in range(images_per_class)]


def _load_progress(path: Path, setup: dict, identities: dict[str, str]) -> tuple[dict[str, dict[str, list[int]]], dict[str, str]]:
    """(per-image counts, teacher identities to record). Counts of a teacher whose identity changed since
    they were recorded (another model, another simulated profile under the same name) are dropped, so
    they are scored again instead of being reused."""
    if not path.is_file():
        return {}, dict(identities)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable progress file ({exc}); delete it to start over") from exc
    if data.get("setup") != setup:
        raise ConfigError(
            f"{path}: progress was recorded with a different setup ({data.get('setup')}); "
            "use another --workdir or delete the file"
        )
    recorded = dict(data.get("identities", {}))
    changed = {nm for nm, ident in identities.items() if nm in recorded and recorded[nm] != ident}
    done = {key: {nm: v for nm, v in entry.items() if nm not in changed} for key, entry in data.get("done", {}).items()}
    return done, recorded | identities


def _frame_for(generator: Generator, cls: str, seed: int, index: int, workdir: Path, gt_set: LabelSet,
               image_dir: Path | None = None) -> tuple[Frame, np.ndarray]:
    """Generate (or reuse) image ``index`` of ``cls``; save image + label PNG; return its Frame and mask.

    The colour image goes to ``image_dir`` when given (exported probes keep images apart from masks).
    """
    slug = cls.replace(" ", "_").replace("/", "_")
    folder = workdir / "images" / slug
    # Stems are unique across classes: per-frame caches (and exported probes' predictions) key on the stem.
    stem = f"{slug}_{index:04d}"
    label_path, mask_path = (folder / f"{stem}{suffix}" for suffix in (".label.png", ".mask.png"))
    color_path = (image_dir or folder) / f"{stem}.png"
    if color_path.is_file() and mask_path.is_file() and label_path.is_file():
        image = np.asarray(Image.open(color_path).convert("RGB"))
        mask = np.asarray(Image.open(mask_path)) > 0
    else:
        out = generator.generate(cls, seed)
        image, mask = out.image, out.mask.astype(bool)
        if image.shape[:2] != mask.shape or image.ndim != 3:
            raise ConfigError(f"generator returned image {image.shape} and mask {mask.shape} for {cls!r}")
        label_value = gt_set.classes.index(cls) if cls in gt_set.classes else IGNORE_LABEL
        labels = np.full(mask.shape, IGNORE_LABEL, dtype=np.uint16)
        labels[mask] = label_value
        folder.mkdir(parents=True, exist_ok=True)
        for path, arr in ((label_path, labels), (mask_path, mask.astype(np.uint8) * 255), (color_path, image)):
            with atomic_path(path) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG")
    h, w = mask.shape
    f = 0.8 * max(h, w)  # a plausible focal length; generated images have no camera
    intrinsics = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)
    frame = Frame(color_path, intrinsics, np.eye(4), w, h, label_path=label_path, domain="probe")
    return frame, mask


def plot_capability(cap: Capability, path: str | Path) -> None:
    """Heatmap PNG (teachers x classes) with the scores written in the cells; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, k = cap.scores.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * k + 2), 1.0 + 0.6 * t))
    im = ax.imshow(cap.scores, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(k), cap.classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(t), cap.teachers, fontsize=8)
    for i in range(t):
        for j in range(k):
            v = cap.scores[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
    simulated = any(name.startswith("simulated") for name in cap.teachers)
    title = f"capability ({cap.config.get('generator', '?')} images)" + (" - SIMULATED teachers" if simulated else "")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.02)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
