"""``sas3d inplace``: distil a 3D student on your scans and label them with it (no training set needed)."""

from __future__ import annotations

import argparse

from sas3d.commands.preflight import Output, add_overwrite_option, preflight, teacher_reads

HELP = "distil the SAS student on your own scans and label them (in-place distillation; CPU-sized defaults)"
DESCRIPTION = """\
For one or a few scans and no training set: the scans' fused 2D features are the only supervision.
The SAS student (superpoint distillation, then TESD) is distilled on exactly these scans, then labels
them, including the points no camera saw. Writes, per scan, OUT/<scan>/labels_student.ply (3D student)
and OUT/<scan>/labels_ensemble.ply (per point, whichever of fused 2D and 3D is more confident), the
checkpoint OUT/run/last.safetensors (use it with `sas3d query` / `sas3d view`) and, when a scan has
ground-truth labels, OUT/scores.json (the labels are read only for scoring).

Fused features: --fused DIR holding <scan name>.safetensors from `sas3d fuse`, or --teacher SPEC
(repeatable; with two or more, --capability cap.json from `sas3d capability`), which runs the fusion
first into OUT/fused/.

Defaults (recipe `inplace`, sas3d/configs/inplace.yaml): a quarter-width MinkUNet18A at 5 cm, RGB
input (geometry only when a scan has no colour), class-balanced losses with a cross-entropy on the
target class, no augmentation, about 300
training steps in all (--epochs overrides). Example:

  sas3d inplace scans/scene0000_00 --teacher precomputed:lseg_out --teacher precomputed:seem_out \\
      --capability cap.json --out labelled/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scans", nargs="+", help="scan folders (any layout sas3d.load_scene reads, with posed frames)")
    parser.add_argument("--out", required=True, help="output folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fused", help="folder with <scan name>.safetensors fused features (from `sas3d fuse`)")
    source.add_argument("--teacher", action="append", metavar="SPEC", help="teacher spec to fuse first (repeatable)")
    parser.add_argument("--capability", help="capability JSON for guided fusion of several --teacher")
    parser.add_argument("--recipe", default="inplace", help="training recipe (default: inplace)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: about 300 steps over all scans)")
    parser.add_argument("--labelset", default="scannet20", help="classes to label with (default scannet20)")
    parser.add_argument("--text-encoder", default=None, help="text encoder (default: the recipe's, minilm)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override, e.g. --set loss.balance=none (repeatable)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"])
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT/run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    reads = [(Path(args.fused), "*.safetensors")] if args.fused else teacher_reads(args.teacher)
    if args.capability:
        reads.append(Path(args.capability))
    preflight(args, reads=reads, scenes=args.scans, label_sets=[args.labelset], text_encoders=[args.text_encoder],
              teachers=args.teacher or [],
              writes=[Output(Path(args.out), "folder", replaces=("*",), marker="inplace.json")])
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    from sas3d import load_scene
    from sas3d.distill.config import load_train_config
    from sas3d.errors import ConfigError, InputError
    from sas3d.pipeline.inplace import default_epochs, label_in_place
    from sas3d.utils.atomic import write_json_atomic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "inplace.json", {"command": "sas3d inplace", "scans": list(args.scans), "fused": args.fused,
                                             "teachers": args.teacher, "capability": args.capability, "recipe": args.recipe})
    scans = [Path(s) for s in args.scans]
    scenes = [load_scene(s) for s in scans]
    names = [s.name for s in scenes]
    if len(set(names)) != len(names):
        raise InputError(None, f"two scans have the same name: {names}")
    overrides = list(args.overrides)
    if any(s.colors is None for s in scenes) and not any(o.startswith("data.input=") for o in overrides):
        missing = [s.name for s in scenes if s.colors is None]
        print(f"note: {', '.join(missing)} have no point colours: the student sees geometry only (data.input=ones)")
        overrides.append("data.input=ones")
    if args.text_encoder:
        overrides.append(f"text.encoder={args.text_encoder}")
    if args.device:
        overrides.append(f"device={args.device}")
    overrides.append(f"text.labelset={args.labelset}")
    cfg = load_train_config(args.recipe, overrides, epochs=args.epochs or default_epochs(len(scans)))
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")

    if args.teacher:
        from sas3d.cli import main as cli_main

        fused_dir = out / "fused"
        for scan, scene in zip(scans, scenes):
            target = fused_dir / f"{scene.name}.safetensors"
            if target.is_file():
                print(f"reusing {target}")
                continue
            argv = ["fuse", str(scan), "--out", str(target), "--text-encoder", cfg.text.encoder, "--labelset", args.labelset]
            for spec in args.teacher:
                argv += ["--teacher", spec]
            if args.capability:
                argv += ["--capability", args.capability]
            if args.no_progress:
                argv.append("--no-progress")
            if cli_main(argv) != 0:
                return 1
    else:
        fused_dir = Path(args.fused)
        for scene in scenes:
            if not (fused_dir / f"{scene.name}.safetensors").is_file():
                raise InputError(fused_dir, f"no fused features {scene.name}.safetensors for scan {scene.name!r} (run `sas3d fuse` first)")

    steps = cfg.schedule.epochs * len(scans)
    print(f"distilling the {cfg.recipe} student in place on {len(scans)} scan(s): {cfg.schedule.epochs} epochs = {steps} steps")
    result = label_in_place(scans, fused_dir, out, cfg, labelset=args.labelset, resume=args.resume, progress=not args.no_progress)
    for scan, files in result.outputs.items():
        print(f"{scan}: {files['student']}  {files['ensemble']}")
    if result.scores is not None:
        write_json_atomic(out / "scores.json", {"labels_used_for": "scoring only", "labelset": args.labelset, **result.scores})
        print("scores on the scans' ground truth (used only for scoring):")
        for name, s in result.scores.items():
            print(f"  {name:<16} mIoU {100 * s['miou']:5.1f}  mAcc {100 * s['macc']:5.1f}")
        print(f"wrote {out / 'scores.json'}")
    print(f"checkpoint: {result.checkpoint}")
    return 0
