"""Checks every verb runs at the top of ``run()``, before its first expensive step (not a verb).

``preflight(args, reads=..., scenes=..., writes=..., label_sets=..., text_encoders=..., teachers=...)``
validates the names and specs a verb was given and its output locations
(:func:`sas3d.utils.outputs.check_outputs`: never over an input, never over a file of another
kind without ``--overwrite``, a writable place), so a typo or a bad ``--out`` fails in a second,
not after the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from sas3d.utils.outputs import Output, Read, check_outputs

__all__ = ["Output", "add_overwrite_option", "add_skip_invalid_poses_option", "preflight"]


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output of another kind (a file or folder this verb did not write); "
                             "an input of the command is never overwritten")


def add_skip_invalid_poses_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-invalid-poses", action="store_true",
                        help="leave out frames whose camera pose is NaN/inf or singular instead of stopping (they are "
                             "counted in a warning); ScanNet's all -inf 'tracking lost' poses are always left out")


def check_text_encoder(spec: str) -> None:
    """Raise ConfigError for an unknown spec, or a CLIP model that cannot be loaded, without loading anything."""
    from sas3d.text.encoders import build_text_encoder

    kind, _, arg = spec.partition(":")
    if kind == "minilm" and arg in ("", "raw"):
        return
    if kind == "clip":
        from sas3d.text.clip import DEFAULT_CLIP_MODEL
        from sas3d.utils.hub import pretrained_options

        pretrained_options(arg or DEFAULT_CLIP_MODEL, "CLIP text encoder")
        return
    build_text_encoder(spec)  # raises its ConfigError for every other spec before loading anything


def check_teacher(spec: str) -> None:
    """Raise for an unknown teacher kind or a missing precomputed folder (models are checked when loaded)."""
    from sas3d.errors import ConfigError, InputError
    from sas3d.teachers.registry import FACTORIES

    kind, _, argument = spec.partition(":")
    if kind not in FACTORIES:
        raise ConfigError(f"unknown teacher {spec!r}; kinds: {', '.join(f'{k}:...' for k in FACTORIES)}")
    if kind == "precomputed" and not Path(argument.partition("#")[0]).is_dir():
        raise InputError(Path(argument.partition("#")[0]), "precomputed teacher folder not found")


def teacher_reads(specs: Iterable[str]) -> list[Read]:
    """The folders of ``precomputed:DIR`` teachers, as read entries."""
    return [(Path(s.partition(":")[2].partition("#")[0]), "*") for s in specs if s.startswith("precomputed:")]


def preflight(
    args: argparse.Namespace,
    *,
    reads: Iterable[Read] = (),
    scenes: Iterable[str | Path] = (),
    writes: Iterable[Output] = (),
    label_sets: Iterable[str | None] = (),
    text_encoders: Iterable[str | None] = (),
    teachers: Iterable[str] = (),
) -> None:
    """Validate a verb's arguments and outputs; raises Sas3dError subclasses naming the problem.

    ``reads``: files (or ``(folder, glob)``) the verb reads; ``scenes``: scene paths (their layout is
    detected now and their files added to the reads); ``writes``: the verb's outputs; ``--overwrite``
    comes from ``args``.
    """
    from sas3d.errors import InputError
    from sas3d.scene.readers import scene_input_files
    from sas3d.text.labelsets import get_label_set

    reads = [r for r in reads if r is not None]
    for r in reads:
        path = Path(r[0] if isinstance(r, tuple) else r)
        if not path.exists():
            raise InputError(path, "not found")
    for name in label_sets:
        if name:
            get_label_set(name)
    teachers = list(teachers)
    for spec in teachers:
        check_teacher(spec)
    for spec in text_encoders:
        if spec:
            check_text_encoder(spec)
    all_reads: list[Read] = reads + teacher_reads(teachers)
    for scene in scenes:
        all_reads += scene_input_files(scene)
    check_outputs(writes, all_reads, overwrite=bool(getattr(args, "overwrite", False)))
