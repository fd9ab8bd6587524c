"""``sas3d capability``: score teachers per class on generated images (SAS 3.2) -> cap.json + heatmap."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "measure each teacher's per-class capability on generated images (SAS 3.2)"
DESCRIPTION = """\
Generates images of every vocabulary class with a known (pseudo) mask, runs every teacher on them and
scores capability S[teacher, class] = sum of intersections / sum of unions (SAS Eq. 3-5). Writes the
scores as JSON (--out) and a heatmap PNG next to it. Generators: 'procedural' (offline drawings with
exact masks) or 'sd:<model id>' (Stable Diffusion + cross-attention masks, refined with --sam <model id>).
Progress is kept per image in --workdir: a killed run resumes where it stopped. Config keys for --set:
the fields of sas3d.capability.CapabilityConfig (e.g. --set num_inference_steps=20).

example:
  sas3d capability --teacher simulated:lseg --teacher simulated:seem --vocabulary indoor \\
      --images-per-class 10 --out cap.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", action="append", required=True, metavar="SPEC",
                   help="teacher spec, repeatable (simulated:lseg, clip-dense:<id>, sam-clip:..., precomputed:DIR)")
    p.add_argument("--generator", default="procedural", help="'procedural' (default, offline) or 'sd:<model id or path>'")
    p.add_argument("--sam", default="none", metavar="MODEL", help="SAM model id/path refining SD masks ('none': keep coarse mask)")
    p.add_argument("--vocabulary", default="indoor", help="'indoor', 'outdoor' (SAS Table 9) or a label-set name/path")
    p.add_argument("--images-per-class", type=int, default=None, help="images per class (default 50, SAS code)")
    p.add_argument("--out", required=True, type=Path, help="capability JSON to write (heatmap: same name, .png)")
    p.add_argument("--text-encoder", default="minilm", help="'minilm' (default) or 'clip:<model id>'")
    p.add_argument("--label-set", default="scannet20", help="label set teachers (and ground-truth label images) use")
    p.add_argument("--workdir", type=Path, default=None, help="images + progress (default: <out>.work next to --out)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="CapabilityConfig override")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overwrite_option(p)


def run(args: argparse.Namespace) -> int:
    preflight(args, teachers=args.teacher, label_sets=[args.label_set], text_encoders=[args.text_encoder],
              writes=[Output(args.out, "json"), Output(args.out.with_suffix(".png"), "png"),
                      Output(args.workdir or args.out.with_name(args.out.stem + ".work"), "folder",
                             replaces=("images", "progress.json"), marker="progress.json")])
    from sas3d.capability.capability import (
        CapabilityConfig,
        compute_capability,
        plot_capability,
        resolve_vocabulary,
    )
    from sas3d.capability.generators import ProceduralGenerator
    from sas3d.config import apply_overrides, from_dict, to_dict
    from sas3d.errors import ConfigError
    from sas3d.teachers.registry import TeacherContext, build_teacher
    from sas3d.text.encoders import build_text_encoder

    cfg = from_dict(CapabilityConfig, apply_overrides({}, args.set), "capability")
    if args.images_per_class is not None:
        cfg.images_per_class = args.images_per_class
    if cfg.images_per_class < 1:
        raise ConfigError(f"--images-per-class must be >= 1, got {cfg.images_per_class}")
    vocab = resolve_vocabulary(args.vocabulary)
    encoder = build_text_encoder(args.text_encoder, device=args.device)
    ctx = TeacherContext(text_encoder=encoder, label_set=args.label_set, device=args.device)
    teachers = [build_teacher(spec, ctx) for spec in args.teacher]

    if args.generator == "procedural":
        if args.sam not in (None, "", "none"):
            raise ConfigError("--sam refines Stable Diffusion masks; the procedural generator's masks are exact")
        generator = ProceduralGenerator(size=cfg.procedural_size)
    elif args.generator.startswith("sd:"):
        from sas3d.capability.diffusion import StableDiffusionGenerator
        from sas3d.capability.sam_refine import build_refiner

        refiner = build_refiner(args.sam, cfg.max_sam_points, args.device)
        generator = StableDiffusionGenerator.from_pretrained(args.generator[3:], refiner, cfg, device=args.device)
    else:
        raise ConfigError(f"unknown generator {args.generator!r}; use 'procedural' or 'sd:<model id>'")

    workdir = args.workdir or args.out.with_name(args.out.stem + ".work")
    cap = compute_capability(
        teachers, generator, vocab, cfg.images_per_class, encoder, workdir,
        teacher_names=args.teacher, label_set=args.label_set, config=cfg, progress=not args.no_progress,
    )
    cap.config["cli"] = {"generator": args.generator, "sam": args.sam, "text_encoder": args.text_encoder}
    cap.config["capability_config"] = to_dict(cfg)
    cap.save(args.out)
    heatmap = args.out.with_suffix(".png")
    plot_capability(cap, heatmap)

    simulated = any(t.startswith("simulated") for t in args.teacher)
    print(f"capability ({'SIMULATED teachers, ' if simulated else ''}{generator.name} images, "
          f"{cfg.images_per_class} per class):")
    width = max(len(c) for c in cap.classes)
    print(" " * width + "  " + "  ".join(f"{t[:14]:>14}" for t in cap.teachers))
    for k, c in enumerate(cap.classes):
        print(f"{c:>{width}}  " + "  ".join(f"{cap.scores[t, k]:>14.3f}" for t in range(len(cap.teachers))))
    print(f"wrote {args.out} and {heatmap}")
    return 0
