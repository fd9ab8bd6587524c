"""``sas3d fuse``: project 2D teacher outputs onto a scene's points and average them (multi-view fusion)."""

from __future__ import annotations

import argparse

from sas3d.commands.preflight import Output, add_overwrite_option, add_skip_invalid_poses_option, preflight

HELP = "fuse per-frame 2D teacher features onto a scene's 3D points"
DESCRIPTION = """\
Project every point into every frame (pinhole, nearest pixel, border margin, depth occlusion
test) and average each teacher's per-pixel features over the views that see it (OpenScene
protocol). Writes a PointFeatures safetensors file: fp16 features (N, C), a seen mask, and the
config that produced it.

Bring your own teacher with --teacher precomputed:DIR, where DIR holds one <frame-stem>.npy
(h, w, C) map per frame in the text space, or <stem>.png (uint16 segment ids) + <stem>.json
(id -> label). With several --teacher options all are fused in one pass over the frames (each
frame's depth read and its points projected once), each teacher's mean kept apart, then combined
with --fusion (guided and confusion need --capability cap.json from `sas3d capability`; confusion,
beyond SAS, weighs each teacher by how likely its predicted class is right given what the teachers
predict, from their per-class capability on the probe images; the file must hold the per-class confusion).

Example:  sas3d fuse data/scene0000_00 --teacher precomputed:lseg_out --out fused/scene0000_00.safetensors
"""

FUSIONS = ("guided", "confusion", "add", "linear", "mean")
CAPABILITY_FUSIONS = ("guided", "confusion")  # need --capability


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", help="scene folder or file (any layout sas3d.load_scene reads)")
    parser.add_argument("--teacher", action="append", required=True, metavar="SPEC",
                        help="teacher spec, e.g. precomputed:DIR, simulated:lseg, clip-dense:MODEL (repeatable)")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--capability", help="capability JSON (sas3d capability) for guided / confusion fusion")
    parser.add_argument("--fusion", choices=FUSIONS,
                        help="how several teachers are combined (default: guided with --capability, else mean)")
    parser.add_argument("--labelset", help="vocabulary of guided / linear / confusion fusion (default scannet20); a --capability file must score all of it")
    parser.add_argument("--text-encoder", default="minilm", help="text encoder spec: minilm or clip:<model> (default minilm)")
    parser.add_argument("--frame-stride", type=int, help="use every n-th frame (default: the reader's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cache", help="folder caching per-frame teacher outputs")
    parser.add_argument("--seed", type=int, default=0, help="seed for teachers that use randomness")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="projection config override, e.g. --set border_margin=5 --set depth_threshold=0.2")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_skip_invalid_poses_option(parser)
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    preflight(args, scenes=[args.scene], reads=[args.capability], teachers=args.teacher, label_sets=[args.labelset],
              text_encoders=[args.text_encoder], writes=[Output(Path(args.out), "safetensors")])

    import torch

    import sas3d
    from sas3d.config import apply_overrides, from_dict, to_dict
    from sas3d.errors import ConfigError
    from sas3d.fusion.multiview import FusionConfig, fuse_teachers_multiview
    from sas3d.geometry.projection import ProjectionConfig, projection_config_for
    from sas3d.teachers.registry import TeacherContext, build_teacher

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device} asked for, but torch sees no CUDA device")
    out = Path(args.out)
    from_dict(ProjectionConfig, apply_overrides(to_dict(ProjectionConfig()), args.set), "--set")  # fail fast on bad keys
    options = {"skip_invalid_poses": args.skip_invalid_poses} | ({} if args.frame_stride is None else {"frame_stride": args.frame_stride})
    scene = sas3d.load_scene(args.scene, **options)
    if not scene.frames:
        raise ConfigError(f"{args.scene}: the scene has no posed frames to fuse from")
    projection = from_dict(ProjectionConfig, apply_overrides(to_dict(projection_config_for(scene.kind)), args.set), "--set")
    cfg = FusionConfig(projection=projection)

    encoder = _lazy_text_encoder(args.text_encoder, args.device)
    context = TeacherContext(
        scene=scene,
        text_encoder=encoder,
        label_set=args.labelset or "scannet20",
        cache_dir=Path(args.cache) if args.cache else None,
        device=args.device,
        seed=args.seed,
    )
    teachers = [build_teacher(spec, context) for spec in args.teacher]
    for spec, teacher in zip(args.teacher, teachers):  # before any frame is read
        space = getattr(teacher, "text_space", None)
        if space is not None and space != encoder.identity:
            raise ConfigError(f"teacher {spec!r} outputs features in the text space {space!r}, but --text-encoder "
                              f"{args.text_encoder} is {encoder.identity!r}; use --text-encoder for the teacher's space")
    fusion = args.fusion or ("guided" if args.capability and len(teachers) > 1 else "mean")
    capability = _load_capability(args.capability) if args.capability else None
    if len(teachers) > 1 and fusion in CAPABILITY_FUSIONS and capability is None:
        raise ConfigError(f"--fusion {fusion} needs --capability cap.json (from `sas3d capability`)")
    rows = None  # the capability rows of the teachers, bound (and a file that does not fit refused) before any frame is read
    if capability is not None and fusion in CAPABILITY_FUSIONS and len(teachers) > 1:
        from sas3d.text.labelsets import get_label_set

        if fusion == "confusion":
            capability.require_confusion()
        rows = capability.bind([getattr(t, "name", "") for t in teachers], [getattr(t, "identity", None) for t in teachers],
                               get_label_set(args.labelset or "scannet20").classes, encoder.identity, args.capability,
                               specs=args.teacher)

    # One pass over the frames for all teachers: each frame's depth is decoded and its points projected once.
    fused = fuse_teachers_multiview(scene, teachers, cfg, args.device, progress=not args.no_progress)
    for spec, features in zip(args.teacher, fused):
        features.metadata["teacher_spec"] = spec

    if len(fused) == 1:
        result = fused[0]
        if args.fusion and args.fusion != "mean":
            print(f"note: one teacher, --fusion {args.fusion} has nothing to combine; writing its mean-fused features")
    else:
        result = _combine(fused, fusion, capability, rows, args, encoder)
        result.metadata.setdefault("projection", to_dict(cfg))
        result.metadata["teacher_specs"] = list(args.teacher)
    result.metadata.setdefault("scene", scene.name)
    result.metadata["source"] = str(args.scene)
    result.save(out)

    seen = int(result.seen.sum())
    names = ", ".join(getattr(t, "name", type(t).__name__) for t in teachers)
    simulated = " (SIMULATED teacher outputs)" if "simulated" in names else ""
    print(
        f"Fused {len(teachers)} teacher(s) [{names}]{simulated} over {len(scene.frames)} frames of scene "
        f"{scene.name}: {seen} of {scene.num_points} points seen ({100.0 * seen / max(1, scene.num_points):.1f}%), "
        f"{result.dim}-d features, fusion {fusion if len(teachers) > 1 else 'mean'}; wrote {out}."
    )
    return 0


def _load_capability(path: str):
    from sas3d.capability import Capability

    return Capability.load(path)


def _combine(fused, fusion, capability, rows, args, encoder):
    """Combine per-teacher features with sas3d.fusion.guided (vocabulary: --labelset; ``rows``: the
    teachers' capability rows, bound by :meth:`Capability.bind` for guided / confusion fusion)."""
    import numpy as np
    import torch

    from sas3d.errors import ConfigError
    from sas3d.fusion.guided import fuse_teachers
    from sas3d.text.labelsets import CATCH_ALL, get_label_set, prompt_for

    if fusion in ("add", "mean"):
        # Text-free combinations: no vocabulary, no text encoder loaded.
        classes: list[str] = []
        class_text = torch.zeros(0, fused[0].dim)
    else:
        classes = list(get_label_set(args.labelset or "scannet20").classes)
        class_text = encoder.encode([prompt_for(c) for c in classes])
        if class_text.shape[1] != fused[0].dim:
            raise ConfigError(f"text encoder {args.text_encoder} gives {class_text.shape[1]}-d features, teachers give {fused[0].dim}-d")
    catch_all = next((i for i, c in enumerate(classes) if c in CATCH_ALL), None)

    scores = confusion = None
    if rows is not None:
        scores = torch.from_numpy(capability.scores_for(rows, classes).astype(np.float32))
        if fusion == "confusion":
            confusion = torch.from_numpy(capability.confusion_for(rows, classes))
    return fuse_teachers(fused, class_text, fusion, scores, None, catch_all,
                         capability_source=str(args.capability) if args.capability else None, capability_confusion=confusion)


def _lazy_text_encoder(spec: str, device: str):
    """A TextEncoder that builds the real one on first use (for its identity, its width or its embeddings)."""
    from sas3d.text.base import TextEncoder
    from sas3d.text.encoders import build_text_encoder

    class LazyTextEncoder(TextEncoder):
        def __init__(self) -> None:
            self.name = spec
            self._encoder: TextEncoder | None = None

        def _get(self) -> TextEncoder:
            if self._encoder is None:
                self._encoder = build_text_encoder(spec, device=device)
            return self._encoder

        @property
        def dim(self) -> int:  # type: ignore[override]
            return self._get().dim

        @property
        def identity(self) -> str:
            return self._get().identity

        def encode(self, texts):
            return self._get().encode(texts)

    return LazyTextEncoder()
