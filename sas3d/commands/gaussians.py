"""``sas3d gaussians ACTION``: open-vocabulary segmentation of a 3D Gaussian Splatting scene (SAS Tab. 5)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "3D Gaussian scenes: lift teacher features onto Gaussians, distil, render and score semantic views"
DESCRIPTION = """\
Work on a trained 3DGS scene (point_cloud.ply of the reference 3DGS code, gsplat or nerfstudio
splatfacto exports) with the posed views of its scan (any scan folder sas3d reads):

  from-mesh  build a Gaussian scene from a mesh (one flat Gaussian per face or vertex; for tests/demos)
  lift       run teachers on the views, lift their features onto the Gaussians (alpha-blending
             weights, or --method centre: centre projection + depth test), and fuse several
             teachers (add / linear / guided with --capability, as `sas3d fuse` does for points)
  distil     train the 3D student on the Gaussian centres with those features (openscene recipe)
  render     render RGB, label and text-query views (alpha compositing, CPU tiles; --backend gsplat on CUDA)
  eval       render label maps of the views and score them against their label images (2D mIoU / mAcc)
  view       web viewer: the splats coloured by RGB, ground truth, class or a text query

--holdout-every K holds out every K-th view: lift skips them, eval/render use only them.

Examples:
  sas3d gaussians from-mesh scans/scene0470_00 --out g.ply
  sas3d gaussians lift g.ply --views scans/scene0470_00 --teacher simulated:lseg --teacher simulated:seem \\
      --capability cap.json --holdout-every 4 --out lifted/guided.safetensors
  sas3d gaussians distil g.ply --features lifted/guided.safetensors --out runs/gs --epochs 300
  sas3d gaussians eval g.ply --views scans/scene0470_00 --checkpoint runs/gs/last.safetensors --holdout-every 4
  sas3d gaussians render g.ply --views scans/scene0470_00 --features lifted/guided.safetensors --query "a chair" --out renders/
  sas3d gaussians view g.ply --features lifted/guided.safetensors
"""

ACTIONS = ("from-mesh", "lift", "distil", "render", "eval", "view")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("from-mesh", help="Gaussian scene from a mesh PLY or scan folder")
    p.add_argument("mesh", type=Path, help="triangle mesh PLY, or a scan folder whose points have faces")
    p.add_argument("--out", type=Path, required=True, help="Gaussian PLY to write (reference 3DGS layout)")
    p.add_argument("--mode", choices=("face", "vertex"), default="face")
    p.add_argument("--scale-factor", type=float, default=None, help="multiplies the Gaussians' standard deviations")
    p.add_argument("--opacity", type=float, default=0.95)

    p = sub.add_parser("lift", help="lift (and fuse) teacher features onto the Gaussians")
    _gaussians_and_views(p)
    p.add_argument("--teacher", action="append", required=True, metavar="SPEC", help="teacher spec (repeatable)")
    p.add_argument("--method", choices=("alpha", "centre"), default="alpha", help="lifting (default alpha)")
    p.add_argument("--fusion", choices=("guided", "confusion", "add", "linear", "mean"), default=None,
                   help="how several teachers are combined (default: guided with --capability, else mean)")
    p.add_argument("--capability", type=Path, help="capability JSON (sas3d capability) for guided / confusion fusion")
    p.add_argument("--per-teacher-dir", type=Path, help="also write each teacher's lifted features here")
    p.add_argument("--cache", type=Path, help="folder caching per-frame teacher outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="per-Gaussian features (.safetensors)")

    p = sub.add_parser("distil", help="train the 3D student on the Gaussian centres")
    p.add_argument("gaussians", type=Path)
    p.add_argument("--features", type=Path, required=True, help="lifted / fused per-Gaussian features")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--recipe", default="openscene", help="training recipe (default openscene: SAS Tab. 5 has no Sec. 3.4)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    p.add_argument("--resume", action="store_true")

    for name, helptext in (("render", "render RGB / label / query PNGs"), ("eval", "2D mIoU / mAcc of rendered label maps")):
        p = sub.add_parser(name, help=helptext)
        _gaussians_and_views(p)
        _feature_source(p, required=(name == "eval"))
        p.add_argument("--backend", choices=("cpu", "gsplat"), default="cpu",
                       help="rasteriser: cpu (numba tiles) or gsplat (CUDA; optional, untested here)")
        if name == "render":
            p.add_argument("--query", action="append", default=[], help="text query to render as a heat-map (repeatable)")
            p.add_argument("--max-views", type=int, default=None, help="render at most this many views")
            p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
        else:
            p.add_argument("--label-dir", type=Path, help="ground-truth label PNGs <frame>.png (default: the scan's label/)")
            p.add_argument("--nyu40", action="store_true", help="label PNGs hold NYU40 ids (ScanNet label-filt): map to ScanNet20")
            p.add_argument("--json", type=Path, help="write the metrics here")

    p = sub.add_parser("view", help="web viewer of the splats")
    p.add_argument("gaussians", type=Path)
    _feature_source(p, required=False)
    p.add_argument("--labelset", default="scannet20")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--query", default=None, help="run this query right away")


def _gaussians_and_views(p: argparse.ArgumentParser) -> None:
    p.add_argument("gaussians", type=Path, help="Gaussian PLY (3DGS layout)")
    p.add_argument("--views", type=Path, required=True, help="scan folder with the posed views (any layout sas3d reads)")
    p.add_argument("--frame-stride", type=int, default=None, help="use every n-th frame (default: the reader's)")
    p.add_argument("--holdout-every", type=int, default=0, help="hold out every K-th view (0: none)")
    p.add_argument("--labelset", default="scannet20")
    p.add_argument("--text-encoder", default="minilm")
    p.add_argument("--no-progress", action="store_true")


def _feature_source(p: argparse.ArgumentParser, required: bool) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--features", type=Path, help="per-Gaussian features (gaussians lift)")
    group.add_argument("--checkpoint", type=Path, help="3D student checkpoint (gaussians distil)")


def run(args: argparse.Namespace) -> int:
    return {"from-mesh": _from_mesh, "lift": _lift, "distil": _distil, "render": _render, "eval": _eval,
            "view": _view}[args.action](args)


def _from_mesh(args: argparse.Namespace) -> int:
    import sas3d
    from sas3d.errors import InputError
    from sas3d.gaussians.from_mesh import gaussians_from_mesh
    from sas3d.gaussians.ply import write_gaussian_ply

    scene = sas3d.load_scene(args.mesh)
    if scene.faces is None or len(scene.faces) == 0:
        raise InputError(args.mesh, "has no faces: from-mesh needs a triangle mesh")
    gs = gaussians_from_mesh(scene.points, scene.faces, scene.colors, scene.labels, name=scene.name, mode=args.mode,
                             scale_factor=args.scale_factor, opacity=args.opacity, label_set=scene.label_set)
    write_gaussian_ply(args.out, gs)
    print(f"wrote {gs.num_gaussians} Gaussians ({args.mode} mode) of {scene.name} to {args.out}")
    return 0


def _views(args: argparse.Namespace, split: str):
    from sas3d.gaussians.views import load_views, split_views

    lift, held = split_views(load_views(args.views, args.frame_stride), args.holdout_every)
    return lift if split == "lift" or args.holdout_every == 0 else held


def _lift(args: argparse.Namespace) -> int:
    from sas3d.errors import ConfigError
    from sas3d.gaussians.lift import LiftConfig, combine_teachers, lift_teacher
    from sas3d.gaussians.ply import read_gaussian_ply
    from sas3d.geometry.projection import projection_config_for
    from sas3d.teachers.registry import TeacherContext, build_teacher
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    import sas3d
    from sas3d.gaussians.views import split_views

    gs = read_gaussian_ply(args.gaussians)
    scene = sas3d.load_scene(args.views, **({} if args.frame_stride is None else {"frame_stride": args.frame_stride}))
    if not scene.frames:
        raise ConfigError(f"{args.views}: the scan has no posed frames")
    frames = split_views(scene.frames, args.holdout_every)[0]
    encoder = build_text_encoder(args.text_encoder)
    ctx = TeacherContext(scene=scene, text_encoder=encoder, label_set=args.labelset, cache_dir=args.cache, seed=args.seed)
    cfg = LiftConfig(method=args.method, projection=projection_config_for(scene.kind))
    teachers = [build_teacher(spec, ctx) for spec in args.teacher]
    names = [getattr(t, "name", spec) for t, spec in zip(teachers, args.teacher)]
    lifted = []
    for teacher, name in zip(teachers, names):
        pf = lift_teacher(gs, frames, teacher, cfg, progress=not args.no_progress)
        if args.per_teacher_dir is not None:
            pf.save(args.per_teacher_dir / f"{name}.safetensors")
        lifted.append(pf)
    fusion = args.fusion or ("guided" if args.capability and len(teachers) > 1 else "mean")
    if len(lifted) == 1:
        result = lifted[0]
    else:
        capability = None
        if args.capability is not None:
            from sas3d.capability import Capability

            capability = Capability.load(args.capability)
        elif fusion in ("guided", "confusion"):
            raise ConfigError(f"--fusion {fusion} needs --capability cap.json (from `sas3d capability`)")
        result = combine_teachers(lifted, names, fusion, get_label_set(args.labelset), encoder, capability,
                                  None if args.capability is None else str(args.capability))
    result.metadata["views"] = {"source": str(args.views), "frames": [f.stem for f in frames],
                                "holdout_every": args.holdout_every}
    result.save(args.out)
    seen = int(result.seen.sum())
    sim = " (SIMULATED teacher outputs)" if any("simulated" in n for n in names) else ""
    print(f"lifted {len(names)} teacher(s) [{', '.join(names)}]{sim} onto {gs.num_gaussians} Gaussians over "
          f"{len(frames)} views ({args.method}): {seen} seen ({100.0 * seen / gs.num_gaussians:.1f}%), fusion "
          f"{fusion if len(names) > 1 else 'none'}; wrote {args.out}")
    return 0


def _distil(args: argparse.Namespace) -> int:
    from sas3d.fusion.features import PointFeatures
    from sas3d.gaussians.distil import distil_gaussians
    from sas3d.gaussians.ply import read_gaussian_ply

    gs = read_gaussian_ply(args.gaussians)
    last = distil_gaussians(gs, PointFeatures.load(args.features), args.out, recipe=args.recipe, overrides=args.set,
                            epochs=args.epochs, resume=args.resume)
    print(f"trained the 3D student on {gs.num_gaussians} Gaussian centres: {last}")
    return 0


def _features(args: argparse.Namespace, gs):
    from sas3d.fusion.features import PointFeatures
    from sas3d.gaussians.distil import checkpoint_features
    from sas3d.gaussians.lift import check_features_match

    if getattr(args, "checkpoint", None) is not None:
        return checkpoint_features(args.checkpoint, gs)
    if getattr(args, "features", None) is not None:
        pf = PointFeatures.load(args.features)
        check_features_match(pf, gs, args.features)
        return pf
    return None


def _check_backend(args: argparse.Namespace) -> None:
    if args.backend == "gsplat":
        from sas3d.gaussians.gsplat_backend import require_gsplat

        require_gsplat()


def _render(args: argparse.Namespace) -> int:
    import numpy as np

    from sas3d.gaussians.display import heat_image, label_image, render_rgb, save_png
    from sas3d.gaussians.ply import read_gaussian_ply
    from sas3d.gaussians.semantic import decode, gaussian_scores
    from sas3d.query.similarity import query_prompt, text_similarity
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    _check_backend(args)
    gs = read_gaussian_ply(args.gaussians)
    frames = _views(args, "held")[: args.max_views]
    pf = _features(args, gs)
    render_fn = _render_fn(args.backend)
    scores, queries = None, []
    if pf is not None:
        encoder = build_text_encoder(args.text_encoder)
        label_set = get_label_set(args.labelset)
        scores = gaussian_scores(pf.features, pf.seen, encoder.encode(label_set.prompts()))
        for text in args.query:
            sim = text_similarity(pf.features, encoder.encode([query_prompt(text)])[0]).numpy()
            queries.append(np.stack([np.where(pf.seen.numpy(), sim, 0.0), pf.seen.numpy()], axis=1).astype(np.float32))
    elif args.query:
        from sas3d.errors import ConfigError

        raise ConfigError("--query needs --features or --checkpoint")
    written = 0
    for frame in frames:
        save_png(args.out / f"{frame.stem}_rgb.png", render_rgb(gs, frame) if args.backend == "cpu" else
                 np.clip(render_fn(gs, frame, gs.colors)[0] * 255 + 0.5, 0, 255).astype(np.uint8))
        written += 1
        if scores is not None:
            save_png(args.out / f"{frame.stem}_labels.png", label_image(decode(render_fn(gs, frame, scores)[0]), len(scores[0]) - 1))
            written += 1
        for q, values in enumerate(queries):
            img = render_fn(gs, frame, values)[0]
            valid = img[..., 1] >= 0.5
            heat = np.where(valid, img[..., 0] / np.maximum(img[..., 1], 1e-6), 0.0)
            save_png(args.out / f"{frame.stem}_query{q}.png", heat_image(heat, valid))
            written += 1
    print(f"rendered {len(frames)} views of {gs.num_gaussians} Gaussians: {written} PNGs in {args.out}")
    return 0


def _render_fn(backend: str):
    if backend == "gsplat":
        from sas3d.gaussians.gsplat_backend import render_gsplat

        return render_gsplat
    from sas3d.gaussians.raster import render

    return render


def _eval(args: argparse.Namespace) -> int:
    from sas3d.gaussians.ply import read_gaussian_ply
    from sas3d.gaussians.semantic import gaussian_scores, score_views
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set
    from sas3d.utils.atomic import write_json_atomic

    _check_backend(args)
    gs = read_gaussian_ply(args.gaussians)
    frames = _views(args, "held")
    pf = _features(args, gs)
    label_set = get_label_set(args.labelset)
    scores = gaussian_scores(pf.features, pf.seen, build_text_encoder(args.text_encoder).encode(label_set.prompts()))
    result = score_views(gs, frames, scores, len(label_set), label_dir=args.label_dir, nyu40=args.nyu40,
                         progress=not args.no_progress, backend=args.backend)
    m = result.metrics
    simulated = "simulated" in str(pf.metadata).lower()
    print(f"{gs.name}: 2D mIoU {100 * m['miou']:.1f}  mAcc {100 * m['macc']:.1f} over {len(frames)} rendered views "
          f"({100 * result.predicted_fraction:.1f}% of labelled pixels predicted){' (SIMULATED teachers)' if simulated else ''}")
    for name, iou, acc, present in zip(label_set.classes, m["iou"], m["acc"], m["present"]):
        if present:
            print(f"  {name:<16} IoU {100 * iou:5.1f}  Acc {100 * acc:5.1f}")
    if args.json is not None:
        write_json_atomic(args.json, {
            "scene": gs.name, "gaussians": gs.identity(), "views": result.views, "miou": m["miou"], "macc": m["macc"],
            "iou": dict(zip(label_set.classes, m["iou"].tolist())), "acc": dict(zip(label_set.classes, m["acc"].tolist())),
            "confusion": result.confusion.tolist(), "predicted_fraction": result.predicted_fraction,
            "features": str(args.features or args.checkpoint), "simulated": simulated})
    return 0


def _view(args: argparse.Namespace) -> int:
    from sas3d.gaussians.display import viewer_data
    from sas3d.gaussians.ply import read_gaussian_ply
    from sas3d.query.viewer import SceneViewer

    gs = read_gaussian_ply(args.gaussians)
    pf = _features(args, gs)
    data = viewer_data(gs, pf, source=None if pf is None else str(args.features or args.checkpoint))
    data.label_set = args.labelset
    SceneViewer(data).serve(host=args.host, port=args.port, query=args.query, what="Gaussians")
    return 0
