"""``sas3d eval``: mIoU / mAcc of a checkpoint and/or fused features on labelled scenes."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "evaluate mIoU/mAcc (or, --task instance, ScanNet instance AP) of a 3D model, fused 2D features or both"
DESCRIPTION = """\
Classify every point of each scene against a label set's text prompts ("a {name} in a scene",
the catch-all as "other") by cosine similarity, accumulate one confusion matrix over all scenes
and report per-class IoU / accuracy and mIoU / mAcc over the classes present in the ground truth
(OpenScene protocol; points without ground truth are ignored, points without a prediction count
as wrong).

Modes: distill = the 3D model's features (--checkpoint); fusion = the fused 2D features from
--fused DIR (<scene name>.safetensors, or OpenScene's <name>.pt / <name>_0.pt; no checkpoint
needed; points no camera saw have no prediction); ensemble = per point whichever of the two is
more confident (OpenScene's 2D-3D ensemble). --tta N sums N rotated/mirrored 3D passes
(OpenScene reports 5; 1 = single pass). nuscenes16 is classified with the 43 names of SAS Table 8
and mapped back to the 16 classes.

Scenes are anything `sas3d` reads, or OpenScene preprocessed .pth files; a single .txt argument
lists scene paths one per line (relative to the list). The scene's labels must be in --labelset
or in a label set whose every class has a same-named class there (e.g. scannet20 -> matterport21).

Writes the JSON (--json, atomic) with the confusion matrix and metrics, and a per-class bar chart
<json stem>.png next to it.

--task instance scores instances instead (ScanNet benchmark protocol: AP over IoU 0.50:0.90, AP50,
AP25 over the 18 classes without wall and floor, instances and predictions of >= 100 vertices):
proposals (--proposals builtin | gt | a folder of proposal files) labelled by --mode, against each
scan's <id>_vh_clean_2.0.010000.segs.json + <id>.aggregation.json (see `sas3d instances --help`).

Examples:
  sas3d eval --checkpoint run/best.safetensors --scenes scans/scene0470_00 --labelset scannet20 --json eval.json
  sas3d eval --mode fusion --fused fused/ --scenes val.txt --labelset scannet20 --json fusion.json
  sas3d eval --task instance --checkpoint run/best.safetensors --scenes val.txt --proposals builtin --json inst.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sas3d.commands.instances import add_eval_arguments

    parser.add_argument("--task", default="semantic", choices=["semantic", "instance"], help="semantic (mIoU, default) or instance (AP)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="3D model checkpoint (.safetensors); needed for distill/ensemble")
    parser.add_argument("--scenes", nargs="+", required=True, type=Path, help="scene paths, or one .txt listing them")
    parser.add_argument("--labelset", default="scannet20", help="scannet20 | matterport21 | matterport40 | matterport80 | matterport160 | nuscenes16")
    parser.add_argument("--mode", default="distill", choices=["distill", "fusion", "ensemble"])
    parser.add_argument("--fused", type=Path, default=None, help="folder of fused features per scene (fusion/ensemble)")
    parser.add_argument("--tta", type=int, default=1, help="number of summed 3D test passes (OpenScene: 5)")
    parser.add_argument("--text-encoder", default="minilm", help="minilm | clip:<model id or path> (must match the features)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--voxel-size", type=float, default=None, help="override the checkpoint's voxel size (m)")
    parser.add_argument("--scene-labelset", default=None, help="label set of OpenScene .pth scene labels (default: --labelset)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override an EvalConfig field")
    parser.add_argument("--json", type=Path, required=True, help="write results here (a .png chart goes next to it)")
    add_overwrite_option(parser)
    add_eval_arguments(parser)


def scene_list(paths: list[Path]) -> list[Path]:
    """Expand a single ``.txt`` list file into scene paths (relative to the list's folder)."""
    from sas3d.errors import InputError

    if len(paths) == 1 and paths[0].suffix == ".txt":
        lst = paths[0]
        if not lst.is_file():
            raise InputError(lst, "scene list not found")
        out = [lst.parent / line.strip() for line in lst.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not out:
            raise InputError(lst, "scene list is empty")
        return out
    return paths


def run(args: argparse.Namespace) -> int:
    import functools

    if args.task == "instance":
        from sas3d.commands.instances import run_eval

        return run_eval(args)

    from sas3d.config import apply_overrides, from_dict, to_dict
    from sas3d.errors import InputError
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes, format_table
    from sas3d.evaluate.interop import open_scene
    from sas3d.evaluate.plots import plot_per_class
    from sas3d.utils.atomic import write_json_atomic

    base = {
        "labelset": args.labelset, "mode": args.mode, "tta": args.tta, "text_encoder": args.text_encoder,
        "device": args.device, "voxel_size": args.voxel_size,
    }
    cfg = from_dict(EvalConfig, apply_overrides(base, args.overrides), "eval")
    if cfg.mode != "fusion" and args.checkpoint is None:
        raise InputError(None, f"--mode {cfg.mode} needs --checkpoint")
    if cfg.mode != "distill" and (args.fused is None or not args.fused.is_dir()):
        raise InputError(args.fused, f"--mode {cfg.mode} needs --fused DIR, an existing folder of fused features")
    if cfg.tta < 1:
        raise InputError(None, f"--tta must be >= 1, got {cfg.tta}")
    paths = scene_list(args.scenes)
    png = args.json.with_suffix(".png")
    fused_reads = [(args.fused, p) for p in ("*.safetensors", "*.pt")] if cfg.mode != "distill" else []
    preflight(args, reads=[args.checkpoint, *args.scenes, *fused_reads], scenes=paths, label_sets=[cfg.labelset, args.scene_labelset],
              text_encoders=[cfg.text_encoder], writes=[Output(args.json, "json"), Output(png, "png")])
    model, voxel_size = None, None
    if cfg.mode != "fusion":
        from sas3d.models.checkpoint import load_checkpoint
        from sas3d.identity import check_text_space
        from sas3d.query.similarity import metadata_value
        from sas3d.text.encoders import text_space_for_spec

        model, meta, _ = load_checkpoint(args.checkpoint, device=cfg.device)
        check_text_space(meta.get("text_space"), text_space_for_spec(cfg.text_encoder), args.checkpoint, "the checkpoint's features")
        model.eval()
        voxel_size = metadata_value(meta, "voxel_size")
    loaders = [functools.partial(open_scene, p, args.scene_labelset or cfg.labelset) for p in paths]
    result = evaluate_scenes(loaders, cfg, model=model, voxel_size=voxel_size, fused_dir=args.fused)
    print(format_table(result))
    out = result.to_json()
    out["config"] = to_dict(cfg)
    out["checkpoint"] = None if args.checkpoint is None else str(args.checkpoint)
    out["fused"] = None if args.fused is None else str(args.fused)
    out["plot"] = png.name
    m = result.metrics
    title = f"{cfg.labelset} {cfg.mode}: mIoU {100 * m['miou']:.1f}, mAcc {100 * m['macc']:.1f} ({len(paths)} scenes)"
    plot_per_class(png, result.classes, m["iou"], m["acc"], m["present"], title)
    write_json_atomic(args.json, out)
    print(f"wrote {args.json} and {png}")
    return 0
