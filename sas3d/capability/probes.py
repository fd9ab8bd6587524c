"""Exported capability probes: SAS 3.2's generated images, scored on outputs of a model run elsewhere.

Real teachers (LSeg, SEEM, OpenSeg, ODISE, ...) often live in their own environment. Capability is
measured on them in three steps:

1. :func:`export_probes` (``sas3d capability --export-probes DIR``) generates the probe images with the
   same code as a normal capability run (:func:`~sas3d.capability.capability._frame_for`) and splits
   what it writes::

       DIR/images/<stem>.png         the probe images: hand this folder to your model
       DIR/images/manifest.json      per image: file, stem, class, index, seed, size; plus generator,
                                     vocabulary, label set and config (written last: an export is
                                     complete when it has a manifest)
       DIR/.sas3d/                   sas3d's own, never shown to the model: the pseudo masks and the
                                     ground-truth label images (images/<class>/<stem>.mask.png,
                                     .label.png) and export.json (the setup a killed export resumes with)

2. The user runs their model on ``DIR/images`` and saves one output per image, named by its stem, in
   the formats of the ``precomputed:`` teacher (:mod:`sas3d.teachers.precomputed`): ``<stem>.npy``
   (an (h, w, C) map in the shared text space) or ``<stem>.png`` (uint16 segment ids) + ``<stem>.json``.

3. :func:`score_probes` (``sas3d capability --probes DIR --teacher precomputed:PRED_DIR``) scores those
   outputs with :func:`~sas3d.capability.capability.compute_capability` (Eq. 3-5, argmax over the
   vocabulary text features), reading the probe images and masks back instead of generating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sas3d.capability.capability import (
    Capability,
    CapabilityConfig,
    _frame_for,
    compute_capability,
    probe_jobs,
    resolve_vocabulary,
)
from sas3d.capability.generators import Generator, GeneratedImage
from sas3d.config import from_dict, to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.scene.types import Frame
from sas3d.teachers.base import Teacher
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import LabelSet, get_label_set
from sas3d.utils.atomic import read_json_object, write_json_atomic

IMAGES = "images"  # DIR/images: the probe images + manifest, for the user's model
PRIVATE = ".sas3d"  # DIR/.sas3d: pseudo masks, label images, export setup
MANIFEST = "manifest.json"
EXPORT_SETUP = "export.json"
MANIFEST_FORMAT = "sas3d capability probes"
MANIFEST_VERSION = 1
OUTPUT_FORMATS = ("<stem>.npy (an (h, w, C) float map in the shared text space), or <stem>.png (uint16 segment ids, "
                  "0 = no mask) + <stem>.json ({\"id\": \"label\"})")


def export_probes(
    generator: Generator,
    vocabulary: LabelSet,
    images_per_class: int,
    out_dir: str | Path,
    *,
    label_set: str = "scannet20",
    config: CapabilityConfig | None = None,
    generator_spec: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the probe images of ``vocabulary`` into ``out_dir`` (layout: module docstring); return the manifest.

    Resumable: images already written (each atomically) are reused when the recorded setup matches.
    """
    from tqdm import tqdm

    cfg = config or CapabilityConfig(images_per_class=images_per_class)
    gt_set = get_label_set(label_set)
    out_dir = Path(out_dir)
    setup = {
        "generator": generator_spec or getattr(generator, "name", type(generator).__name__),
        "generator_name": getattr(generator, "name", type(generator).__name__),  # e.g. "sd+sam": which refiner
        "vocabulary": {"name": vocabulary.name, "classes": list(vocabulary.classes)},
        "label_set": {"name": gt_set.name, "classes": list(gt_set.classes)},
        "config": {k: v for k, v in to_dict(cfg).items() if k != "images_per_class"},
    }
    setup_path = out_dir / PRIVATE / EXPORT_SETUP
    if setup_path.is_file():
        recorded = read_json_object(setup_path, "export setup")
        if recorded != setup:
            changed = sorted(k for k in setup if recorded.get(k) != setup[k])
            raise ConfigError(f"{out_dir}: holds probes exported with another {', '.join(changed)}; "
                              "export into a new folder (or delete this one)")
    else:
        write_json_atomic(setup_path, setup)

    images = []
    for k, cls, i in tqdm(probe_jobs(vocabulary, images_per_class), desc="export probes", unit="img", disable=not progress):
        seed = cfg.seed_offset + i
        frame, _ = _frame_for(generator, cls, seed, i, out_dir / PRIVATE, gt_set, image_dir=out_dir / IMAGES)
        images.append({"file": frame.color_path.name, "stem": frame.stem, "class": cls, "index": i, "seed": seed,
                       "width": frame.width, "height": frame.height})
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "instructions": f"Run your model on every image listed here and save, named by the image's stem, {OUTPUT_FORMATS} "
                        "into one folder per model; then: sas3d capability --probes <this export> "
                        "--teacher precomputed:<that folder> --out cap.json",
        **setup,
        "label_set_spec": label_set,
        "images_per_class": images_per_class,
        "images": images,
    }
    write_json_atomic(out_dir / IMAGES / MANIFEST, manifest)
    return manifest


@dataclass
class ExportedProbes:
    """A complete export, read back from its manifest."""

    root: Path
    manifest: dict[str, Any]
    vocabulary: LabelSet
    label_set: str  # the label-set spec the ground-truth label images were written in
    config: CapabilityConfig
    images_per_class: int

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES

    @property
    def manifest_path(self) -> Path:
        return self.images_dir / MANIFEST

    @property
    def stems(self) -> list[str]:
        return [entry["stem"] for entry in self.manifest["images"]]

    def frame(self, cls: str, seed: int, index: int) -> tuple[Frame, np.ndarray]:
        """The probe's Frame (image in images/, labels in .sas3d/) and pseudo mask; nothing is generated."""
        frame, mask = _frame_for(_NoGeneration(self), cls, seed, index, self.root / PRIVATE,
                                 get_label_set(self.label_set), image_dir=self.images_dir)
        expected = self._stem_of[(cls, index)]
        if frame.stem != expected:
            raise InputError(self.manifest_path, f"lists {expected}.png as image {index} of {cls!r}, sas3d names it {frame.stem}.png")
        return frame, mask

    @cached_property
    def _stem_of(self) -> dict[tuple[str, int], str]:
        return {(e["class"], e["index"]): e["stem"] for e in self.manifest["images"]}


class _NoGeneration:
    """Stands in for the generator when scoring an export: a probe file that is gone is an error, never redrawn."""

    def __init__(self, probes: ExportedProbes):
        self.name = probes.manifest["generator"]
        self.root = probes.root

    def generate(self, class_name: str, seed: int) -> GeneratedImage:
        raise InputError(self.root / PRIVATE, f"the image, pseudo mask or label image of a {class_name!r} probe (seed {seed}) "
                                              f"is missing: the export is incomplete or was copied without its {PRIVATE} "
                                              "folder; run --export-probes again")


def load_probes(path: str | Path) -> ExportedProbes:
    """Read an export (its root, or its images/ folder); every listed image must be there."""
    path = Path(path)
    root = path.parent if path.name == IMAGES and (path / MANIFEST).is_file() else path
    manifest_path = root / IMAGES / MANIFEST
    if not manifest_path.is_file():
        raise InputError(manifest_path, "probe manifest not found: export probes first (sas3d capability --export-probes "
                                        f"{path}); an export that did not finish has no manifest yet: run it again")
    data = read_json_object(manifest_path, "probe manifest")
    if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
        raise InputError(manifest_path, f"not a sas3d probe manifest (format {data.get('format')!r}, version {data.get('version')!r})")
    try:
        vocabulary = LabelSet(str(data["vocabulary"]["name"]), tuple(data["vocabulary"]["classes"]))
        config = from_dict(CapabilityConfig, {**data["config"], "images_per_class": data["images_per_class"]}, "manifest config")
        probes = ExportedProbes(root, data, vocabulary, str(data["label_set_spec"]), config, int(data["images_per_class"]))
        listed = [(e["class"], int(e["index"])) for e in data["images"]]
        files = [e["file"] for e in data["images"]]
        stems = [str(e["stem"]) for e in data["images"]]
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise InputError(manifest_path, f"incomplete probe manifest ({type(exc).__name__}: {exc})") from None
    wanted = [(c, i) for _, c, i in probe_jobs(vocabulary, probes.images_per_class)]
    if sorted(listed) != sorted(wanted) or any(f != f"{s}.png" for f, s in zip(files, stems)):
        raise InputError(manifest_path, f"lists {len(listed)} images, not the {len(wanted)} probes of its vocabulary "
                                        f"({probes.images_per_class} per class) named <stem>.png")
    if not (root / PRIVATE).is_dir():
        raise InputError(root / PRIVATE, "not found: the pseudo masks of this export are kept there (copy the whole export "
                                         "folder, not only images/)")
    missing = [f for f in files if not (probes.images_dir / f).is_file()]
    if missing:
        raise InputError(probes.images_dir, f"{len(missing)} of {len(files)} probe images listed in {MANIFEST} are missing "
                                            f"({_first(missing)}); run --export-probes again")
    return probes


def check_request(probes: ExportedProbes, vocabulary: str | None, label_set: str | None) -> None:
    """Refuse an export made for another vocabulary / label set than the one asked for (None: not asked)."""
    sets = []
    if vocabulary is not None:
        sets.append(("vocabulary", "--vocabulary", vocabulary, resolve_vocabulary(vocabulary), probes.vocabulary.classes,
                     probes.vocabulary.name))
    if label_set is not None:
        recorded = probes.manifest["label_set"]
        sets.append(("label set", "--label-set", label_set, get_label_set(label_set), tuple(recorded["classes"]), recorded["name"]))
    for what, flag, spec, asked, classes, name in sets:
        if tuple(asked.classes) != tuple(classes):
            raise InputError(probes.manifest_path, f"probes were exported for {what} {name!r} ({len(classes)} classes: "
                                                   f"{_first(list(classes))}), not {flag} {spec} ({asked.name!r}, {len(asked)} "
                                                   f"classes: {_first(list(asked.classes))}); export again with {flag} {spec}, "
                                                   f"or leave {flag} out to use the export's")


def check_predictions(teachers: Sequence[Teacher], probes: ExportedProbes, text_dim: int) -> None:
    """Every ``precomputed:`` teacher has an output for every probe (and dense ones the text dimension)."""
    from sas3d.teachers.precomputed import PrecomputedTeacher

    stems = probes.stems
    for teacher in teachers:
        if not isinstance(teacher, PrecomputedTeacher):
            continue
        missing = teacher.missing_outputs(stems)
        if missing:
            raise InputError(teacher.directory, f"{len(missing)} of {len(stems)} probe images have no prediction here "
                                                f"(missing: {_first([m.name for m in missing])}); for each image <stem>.png "
                                                f"in {probes.images_dir} save {OUTPUT_FORMATS}")
        for stem in stems:
            dense = teacher.directory / f"{stem}.npy"
            try:
                shape = np.load(dense, mmap_mode="r", allow_pickle=False).shape if dense.is_file() else None
            except (OSError, ValueError):
                continue  # unreadable: the teacher reports it, naming the file, when it reads it
            if shape is not None and len(shape) == 3 and shape[2] != text_dim:
                raise InputError(dense, f"has {shape[2]} feature channels, the text encoder gives {text_dim}: dense "
                                        "predictions must be in the shared text space of --text-encoder")


def score_probes(
    teachers: Sequence[Teacher],
    probes: ExportedProbes,
    text_encoder: TextEncoder,
    workdir: str | Path,
    *,
    teacher_names: Sequence[str],
    progress: bool = True,
) -> Capability:
    """Capability of ``teachers`` on an export (Eq. 3-5); per-image counts are kept in ``workdir``."""
    check_predictions(teachers, probes, text_encoder.dim)
    cap = compute_capability(
        teachers, _NoGeneration(probes), probes.vocabulary, probes.images_per_class, text_encoder, workdir,
        teacher_names=teacher_names, label_set=probes.label_set, config=probes.config, progress=progress,
        frame_source=probes.frame,
    )
    cap.config["probes"] = {"export": str(probes.root), "manifest": str(probes.manifest_path),
                            "generator": probes.manifest["generator"], "images": len(probes.stems)}
    return cap


def _first(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


__all__ = ["ExportedProbes", "check_predictions", "check_request", "export_probes", "load_probes", "score_probes"]
