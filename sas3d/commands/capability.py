"""``sas3d capability``: score teachers per class on generated images (SAS 3.2) -> cap.json + heatmap.

Three modes: generate and score in one run (default); ``--export-probes DIR`` (generate only, for a
model run elsewhere); ``--probes DIR`` (score outputs of such a model, :mod:`sas3d.capability.probes`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "measure each teacher's per-class capability on generated images (SAS 3.2)"
DESCRIPTION = """\
Generates images of every vocabulary class with a known (pseudo) mask, runs every teacher on them and
scores capability S[teacher, class] = sum of intersections / sum of unions (SAS Eq. 3-5; a teacher's
per-pixel class is the argmax over the vocabulary text features). Writes the scores as JSON (--out) and
a heatmap PNG next to it. Generators: 'procedural' (offline drawings with exact masks) or
'sd:<model id>' (Stable Diffusion + cross-attention masks, refined with --sam <model id>).
Progress is kept per image in --workdir: a killed run resumes where it stopped. Config keys for --set:
the fields of sas3d.capability.CapabilityConfig (e.g. --set num_inference_steps=20).

example:
  sas3d capability --teacher simulated:lseg --teacher simulated:seem --vocabulary indoor \\
      --images-per-class 10 --out cap.json

Your own LSeg / SEEM / OpenSeg / ODISE outputs (bring your own teacher; the model runs in its own
environment, sas3d only reads what it saved):
  1. export the probe images:
       sas3d capability --export-probes probes --vocabulary indoor --images-per-class 10
     writes probes/images/ (the images + manifest.json: give this folder to your model) and keeps the
     pseudo masks to itself in probes/.sas3d/. A killed export resumes; it is complete once
     probes/images/manifest.json exists.
  2. run your model on probes/images/*.png and save, per image and named by the image's stem, into one
     new folder per model (the precomputed:DIR formats): <stem>.npy, an (h, w, C) map in the shared text
     space of --text-encoder (pixel-feature models such as LSeg / OpenSeg: --text-encoder clip:<the CLIP
     they were trained with>), or <stem>.png (uint16 segment ids, 0 = no mask) + <stem>.json
     ({"id": "label"}, mask models such as SEEM / ODISE: labels are embedded by --text-encoder).
  3. score them (simulated or built-in teachers may be mixed in):
       sas3d capability --probes probes --teacher precomputed:probe_out/lseg \\
           --teacher precomputed:probe_out/seem --out cap.json
     A precomputed:DIR teacher's row is named after its folder (lseg, seem): the name `sas3d fuse` looks
     up, so give the folder of the scene frames' outputs the same name.
  4. sas3d fuse SCENE --teacher precomputed:scene_out/lseg --teacher precomputed:scene_out/seem \\
         --capability cap.json --out fused.safetensors
With --probes, the generator, config and images per class come from the manifest; --vocabulary and
--label-set, when given, must be the export's. Counts are re-read from the prediction folders on every
run unless --workdir is given (then they are kept there per teacher name: delete it when outputs change).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--export-probes", type=Path, metavar="DIR",
                      help="only generate the probe images into DIR/images (+ manifest.json) for a model run elsewhere")
    mode.add_argument("--probes", type=Path, metavar="DIR",
                      help="score teachers on the probes exported into DIR (instead of generating images)")
    p.add_argument("--teacher", action="append", default=[], metavar="SPEC",
                   help="teacher spec, repeatable (simulated:lseg, clip-dense:<id>, sam-clip:..., precomputed:DIR)")
    p.add_argument("--generator", default=None, help="'procedural' (default, offline) or 'sd:<model id or path>'")
    p.add_argument("--sam", default=None, metavar="MODEL", help="SAM model id/path refining SD masks ('none': keep coarse mask)")
    p.add_argument("--vocabulary", default=None, help="'indoor' (default), 'outdoor' (SAS Table 9) or a label-set name/path")
    p.add_argument("--images-per-class", type=int, default=None, help="images per class (default 50, SAS code)")
    p.add_argument("--out", type=Path, default=None, help="capability JSON to write (heatmap: same name, .png)")
    p.add_argument("--text-encoder", default=None, help="'minilm' (default) or 'clip:<model id>'")
    p.add_argument("--label-set", default=None,
                   help="label set teachers (and ground-truth label images) use (default scannet20)")
    p.add_argument("--workdir", type=Path, default=None, help="images + progress (default: <out>.work next to --out); with --probes: "
                                                             "progress only, none kept unless given")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="CapabilityConfig override")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overwrite_option(p)


def run(args: argparse.Namespace) -> int:
    from sas3d.errors import ConfigError

    if args.export_probes is not None:
        given = [flag for flag, value in (("--teacher", args.teacher), ("--out", args.out), ("--workdir", args.workdir),
                                          ("--text-encoder", args.text_encoder)) if value]
        if given:
            raise ConfigError(f"--export-probes only writes probe images; {', '.join(given)} belong to scoring (--probes)")
        return _export(args)
    if not args.teacher or args.out is None:
        raise ConfigError("give --teacher (repeatable) and --out cap.json (or --export-probes DIR to only write probe images)")
    if args.probes is not None:
        given = [flag for flag, value in (("--generator", args.generator), ("--sam", args.sam), ("--set", args.set),
                                          ("--images-per-class", args.images_per_class)) if value is not None and value != []]
        if given:
            raise ConfigError(f"with --probes the images are the export's: {', '.join(given)} cannot change them")
        return _score_exported(args)
    return _generate_and_score(args)


def _generate_and_score(args: argparse.Namespace) -> int:
    label_set, text_encoder = args.label_set or "scannet20", args.text_encoder or "minilm"
    workdir = args.workdir or args.out.with_name(args.out.stem + ".work")
    preflight(args, teachers=args.teacher, label_sets=[label_set], text_encoders=[text_encoder],
              writes=[Output(args.out, "json"), Output(args.out.with_suffix(".png"), "png"),
                      Output(workdir, "folder", replaces=("images", "progress.json"), marker="progress.json")])
    from sas3d.capability.capability import compute_capability, resolve_vocabulary

    cfg = _config(args)
    vocab = resolve_vocabulary(args.vocabulary or "indoor")
    encoder, teachers, names = _teachers(args, label_set, text_encoder)
    generator = _generator(args, cfg)
    cap = compute_capability(
        teachers, generator, vocab, cfg.images_per_class, encoder, workdir,
        teacher_names=names, label_set=label_set, config=cfg, progress=not args.no_progress,
    )
    cap.config["cli"] = {"generator": args.generator or "procedural", "sam": args.sam or "none", "text_encoder": text_encoder}
    return _write(cap, args, f"{generator.name} images, {cfg.images_per_class} per class")


def _export(args: argparse.Namespace) -> int:
    label_set = args.label_set or "scannet20"
    from sas3d.capability.probes import EXPORT_SETUP, IMAGES, MANIFEST, PRIVATE

    preflight(args, label_sets=[label_set],
              writes=[Output(args.export_probes, "folder", replaces=(IMAGES, PRIVATE), marker=f"{PRIVATE}/{EXPORT_SETUP}")])
    from sas3d.capability.capability import resolve_vocabulary
    from sas3d.capability.probes import export_probes

    cfg = _config(args)
    vocab = resolve_vocabulary(args.vocabulary or "indoor")
    generator = _generator(args, cfg)
    spec = (args.generator or "procedural") + (f"+sam:{args.sam}" if args.sam not in (None, "", "none") else "")
    manifest = export_probes(generator, vocab, cfg.images_per_class, args.export_probes, label_set=label_set, config=cfg,
                             generator_spec=spec, progress=not args.no_progress)
    images = args.export_probes / IMAGES
    print(f"wrote {len(manifest['images'])} probe images ({generator.name}, {cfg.images_per_class} per class, "
          f"{len(vocab)} classes of {vocab.name}) and {MANIFEST} into {images}; pseudo masks kept in "
          f"{args.export_probes / PRIVATE}")
    print(f"next: run your model on {images}/*.png, save <stem>.npy (or <stem>.png + <stem>.json) per image into a folder "
          f"per model, then: sas3d capability --probes {args.export_probes} --teacher precomputed:FOLDER --out cap.json")
    return 0


def _score_exported(args: argparse.Namespace) -> int:
    import tempfile

    from sas3d.capability.probes import IMAGES, MANIFEST, check_request, load_probes, score_probes

    text_encoder = args.text_encoder or "minilm"
    writes = [Output(args.out, "json"), Output(args.out.with_suffix(".png"), "png")]
    if args.workdir is not None:
        writes.append(Output(args.workdir, "folder", replaces=("progress.json",), marker="progress.json"))
    manifest = args.probes / IMAGES / MANIFEST if (args.probes / IMAGES).is_dir() else args.probes / MANIFEST
    # A missing manifest is reported by load_probes, which says how to make one.
    preflight(args, reads=[manifest] if manifest.is_file() else [], teachers=args.teacher, label_sets=[args.label_set],
              text_encoders=[text_encoder], writes=writes)
    probes = load_probes(args.probes)
    check_request(probes, args.vocabulary, args.label_set)
    encoder, teachers, names = _teachers(args, probes.label_set, text_encoder)
    with tempfile.TemporaryDirectory(prefix="sas3d-capability-") as scratch:
        cap = score_probes(teachers, probes, encoder, args.workdir or scratch, teacher_names=names,
                           progress=not args.no_progress)
    cap.config["cli"] = {"probes": str(args.probes), "generator": probes.manifest["generator"], "text_encoder": text_encoder}
    return _write(cap, args, f"exported {probes.manifest['generator']} probes, {probes.images_per_class} per class")


def _config(args: argparse.Namespace):
    from sas3d.capability.capability import CapabilityConfig
    from sas3d.config import apply_overrides, from_dict
    from sas3d.errors import ConfigError

    cfg = from_dict(CapabilityConfig, apply_overrides({}, args.set), "capability")
    if args.images_per_class is not None:
        cfg.images_per_class = args.images_per_class
    if cfg.images_per_class < 1:
        raise ConfigError(f"--images-per-class must be >= 1, got {cfg.images_per_class}")
    return cfg


def _generator(args: argparse.Namespace, cfg):
    from sas3d.capability.generators import ProceduralGenerator
    from sas3d.errors import ConfigError

    spec, sam = args.generator or "procedural", args.sam or "none"
    if spec == "procedural":
        if sam not in ("", "none"):
            raise ConfigError("--sam refines Stable Diffusion masks; the procedural generator's masks are exact")
        return ProceduralGenerator(size=cfg.procedural_size)
    if spec.startswith("sd:"):
        from sas3d.capability.diffusion import StableDiffusionGenerator
        from sas3d.capability.sam_refine import build_refiner

        refiner = build_refiner(sam, cfg.max_sam_points, args.device)
        return StableDiffusionGenerator.from_pretrained(spec[3:], refiner, cfg, device=args.device)
    raise ConfigError(f"unknown generator {spec!r}; use 'procedural' or 'sd:<model id>'")


def _teachers(args: argparse.Namespace, label_set: str, text_encoder: str):
    """(text encoder, teachers, their capability row names): a precomputed:DIR teacher's name (the
    folder name, what `sas3d fuse` looks up), every other teacher's spec."""
    from sas3d.errors import ConfigError
    from sas3d.teachers.registry import TeacherContext, build_teacher
    from sas3d.text.encoders import build_text_encoder

    encoder = build_text_encoder(text_encoder, device=args.device)
    ctx = TeacherContext(text_encoder=encoder, label_set=label_set, device=args.device)
    teachers = [build_teacher(spec, ctx) for spec in args.teacher]
    names = [t.name if spec.startswith("precomputed:") else spec for spec, t in zip(args.teacher, teachers)]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"two teachers would share the capability row {clash[0]!r} (precomputed:DIR rows are named after "
                          "the folder): give each model's output folder its own name")
    return encoder, teachers, names


def _write(cap, args: argparse.Namespace, what: str) -> int:
    from sas3d.capability.capability import plot_capability

    cap.config["teacher_specs"] = dict(zip(cap.teachers, args.teacher))
    cap.save(args.out)
    heatmap = args.out.with_suffix(".png")
    plot_capability(cap, heatmap)
    simulated = any(t.startswith("simulated") for t in args.teacher)
    print(f"capability ({'SIMULATED teachers, ' if simulated else ''}{what}):")
    width = max(len(c) for c in cap.classes)
    print(" " * width + "  " + "  ".join(f"{t[:14]:>14}" for t in cap.teachers))
    for k, c in enumerate(cap.classes):
        print(f"{c:>{width}}  " + "  ".join(f"{cap.scores[t, k]:>14.3f}" for t in range(len(cap.teachers))))
    print(f"wrote {args.out} and {heatmap}")
    return 0
