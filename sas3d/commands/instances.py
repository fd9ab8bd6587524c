"""``sas3d instances``: class-agnostic 3D proposals labelled with open-vocabulary features (SAS Sec. 4.4).

Also holds the options and runner of ``sas3d eval --task instance`` (``add_eval_arguments`` /
``run_eval``), so that both verbs describe proposals and labellers the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "open-vocabulary 3D instances: proposals labelled by the 3D student / fused 2D (PLY + JSON, text queries)"
DESCRIPTION = """\
Find object instances in a scene and name them with open-vocabulary features, as SAS labels
Mask3D proposals with its distilled 3D encoder: each proposal's class is the class prompt ("a
{name} in a scene") closest to the mean of its points' features; its confidence = softmax
probability of that class x share of its points that agree x the proposal's own score.

Proposals (--proposals):
  builtin   training-free, CPU: superpoints merged over their contact graph by feature similarity,
            at several granularities (overlapping proposals, as Mask3D returns), each scored by its
            stability in the merge hierarchy (lifetime x points, as HDBSCAN; builtin.score=lifetime:
            the lifetime alone, none: no score), duplicates removed by NMS (builtin.nms_iou=0.5)
  gt        the scene's ground-truth instances (segs.json + aggregation.json): an upper bound
  FILE/DIR  bring your own: a ScanNet benchmark instance .txt (Mask3D's export), OpenMask3D's
            <scene>_masks.pt, a .npz/.pt dict (pred_masks, pred_scores, pred_classes) or .npy;
            a folder holds one per scene. Pickles are never executed.

Labellers (--labeller): distill (3D student, --checkpoint; SAS), fusion (fused 2D, --fused),
ensemble (OpenScene's per-point 2D-3D ensemble; both).

Writes OUT/instances.ply (vertex properties `instance` (-1 = none) and `label`, colours by instance;
overlaps show the higher-scored instance) and OUT/instances.json (class, score, point count,
bounding box per instance, best first). --query ranks instances by similarity to free text
(OUT/queries.json); the match is by text embedding only, so spatial phrases ("near the window")
are not understood as relations. --scannet-export writes the ScanNet benchmark prediction format
under OUT/scannet/ for the official evaluation script. --view opens the web viewer with the
instances (colour mode "instances", and "top instances" highlights a query's best matches).

Examples:
  sas3d instances scans/scene0470_00 --checkpoint runs/sas/last.safetensors --out inst/
  sas3d instances scans/scene0470_00 --checkpoint runs/sas/last.safetensors --query "something to sit on" --top 5 --out inst/
  sas3d instances scans/scene0470_00 --fused fused/scene0470_00.safetensors --labeller fusion --proposals mask3d/scene0470_00.txt --out inst/
"""


def _common(parser: argparse.ArgumentParser, fused_help: str) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="3D student checkpoint (labeller distill / ensemble)")
    parser.add_argument("--fused", type=Path, default=None, help=fused_help)
    parser.add_argument("--labeller", default=None, choices=["distill", "fusion", "ensemble"],
                        help="distill = 3D student (default with --checkpoint), fusion = fused 2D (default without), ensemble = both")
    parser.add_argument("--proposals", default="builtin", help="builtin | gt | a proposal file or folder (see above)")
    parser.add_argument("--proposal-features", default=None, choices=["distill", "fusion", "ensemble"],
                        help="features the built-in proposals merge by (default: the labeller's)")
    parser.add_argument("--proposal-labels", action="store_true",
                        help="keep a proposal file's own labels and scores instead of labelling (e.g. a closed-set Mask3D export)")
    parser.add_argument("--text-encoder", default="minilm", help="minilm | clip:<model id or path> (must match the features)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--voxel-size", type=float, default=None, help="override the checkpoint's voxel size (m)")
    parser.add_argument("--set", dest="instance_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an InstanceConfig field, e.g. label.nms_iou=0.5 or builtin.levels=[0.9,0.7]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="scene folder or file (any layout sas3d reads)")
    _common(parser, "fused-feature file of the scene (labeller fusion / ensemble)")
    parser.add_argument("--labelset", default="scannet20", help="label set whose classes name the instances")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--query", action="append", default=[], help="free-text instance query (repeatable)")
    parser.add_argument("--top", type=int, default=5, help="instances listed per query")
    parser.add_argument("--scannet-export", action="store_true", help="also write OUT/scannet/ in the ScanNet benchmark format")
    parser.add_argument("--view", action="store_true", help="open the web viewer on the result (Ctrl-C to stop)")
    parser.add_argument("--port", type=int, default=8080)


def instance_config(args: argparse.Namespace, labelset: str = "scannet20"):
    """InstanceConfig from the shared options (labeller defaults: distill with a checkpoint, else fusion)."""
    from sas3d.config import apply_overrides, from_dict, to_dict
    from sas3d.instances.segment import InstanceConfig

    labeller = args.labeller or ("distill" if args.checkpoint is not None else "fusion")
    base = to_dict(InstanceConfig())
    base.update(labeller=labeller, proposals=str(args.proposals), proposal_features=args.proposal_features,
                use_proposal_labels=args.proposal_labels, labelset=labelset, text_encoder=args.text_encoder,
                device=args.device, voxel_size=args.voxel_size)
    return from_dict(InstanceConfig, apply_overrides(base, args.instance_overrides), "instances")


def _load_model(args: argparse.Namespace, cfg) -> tuple:
    from sas3d.errors import InputError

    needs = cfg.labeller != "fusion" or cfg.proposal_features in ("distill", "ensemble")
    if cfg.use_proposal_labels or not needs:
        return None, None
    if args.checkpoint is None:
        raise InputError(None, f"labeller {cfg.labeller} needs --checkpoint (a 3D student)")
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.query.similarity import metadata_value

    model, meta, _ = load_checkpoint(args.checkpoint, device=cfg.device)
    return model.eval(), cfg.voxel_size or metadata_value(meta, "voxel_size")


def run(args: argparse.Namespace) -> int:
    from sas3d.config import to_dict
    from sas3d.evaluate.interop import open_scene
    from sas3d.evaluate.predict import build_class_text
    from sas3d.instances.export import write_instances
    from sas3d.instances.labelling import rank_instances
    from sas3d.instances.segment import FeatureSources, segment_instances
    from sas3d.query.similarity import query_prompt
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set
    from sas3d.utils.atomic import write_json_atomic

    cfg = instance_config(args, args.labelset)
    scene = open_scene(args.scene)
    ls = get_label_set(cfg.labelset)
    encoder = build_text_encoder(cfg.text_encoder, device=cfg.device)
    ct = build_class_text(ls, encoder)
    model, voxel_size = _load_model(args, cfg)
    gt_ids = None
    if cfg.proposals == "gt":
        from sas3d.evaluate.instance_eval import scene_gt

        gt_ids = scene_gt(scene).ids
    inst, props = segment_instances(scene, cfg, FeatureSources(model, voxel_size, args.fused), ct, list(ls.classes), gt_ids)
    ply, js = write_instances(args.out, scene, inst, {"config": to_dict(cfg), "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
                                                       "fused": None if args.fused is None else str(args.fused), "proposal_count": len(props)})
    print(f"{scene.name}: {len(props)} proposals -> {len(inst)} instances ({cfg.labeller} labeller)")
    for i in range(min(10, len(inst))):
        print(f"  {i:3d} {inst.class_names[int(inst.classes[i])]:<16} score {inst.scores[i]:.3f}  {int(inst.sizes[i]):7d} points")
    if args.query:
        answers = []
        for q in args.query:
            ranked = rank_instances(inst, encoder.encode([query_prompt(q)])[0], top_k=args.top)
            answers.append({"query": q, "prompt": query_prompt(q), "instances": [r.__dict__ for r in ranked]})
            print(f"query {q!r}: " + ", ".join(f"#{r.index} {r.class_name} ({r.similarity:.3f})" for r in ranked))
        write_json_atomic(args.out / "queries.json", {"scene": scene.name, "queries": answers,
                                                      "note": "ranked by cosine similarity of each instance's mean feature to the query text"})
    if args.scannet_export:
        from sas3d.evaluate.instance_eval import nyu40_label_ids
        from sas3d.instances.readers import write_benchmark_predictions

        txt = write_benchmark_predictions(args.out / "scannet", scene.name, inst.masks, nyu40_label_ids(inst), inst.scores)
        print(f"wrote {txt} (ScanNet benchmark format)")
    print(f"wrote {ply} and {js}")
    if args.view:
        _view(args, scene, inst, model, voxel_size)
    return 0


def _view(args: argparse.Namespace, scene, inst, model, voxel_size) -> None:
    from sas3d.query.viewer import SceneViewer

    feats = seen = None
    if model is not None:
        from sas3d.instances.features import student_point_features
        from sas3d.query.similarity import DEFAULT_VOXEL_SIZE

        feats = student_point_features(model, scene, float(voxel_size or DEFAULT_VOXEL_SIZE))
    elif args.fused is not None:
        from sas3d.query.similarity import load_point_features

        pf = load_point_features(args.fused, scene)
        feats, seen = pf.features, pf.seen.numpy()
    source = args.fused or args.checkpoint
    viewer = SceneViewer(instance_viewer_data(scene, inst, feats, seen, None if source is None else str(source)))
    viewer.start(port=args.port)
    viewer.set_mode("instances")
    if args.query:
        viewer.highlight_instances(args.query[0], top_k=min(args.top, 5))
    print(f"viewer: http://127.0.0.1:{viewer.port}  (Ctrl-C to stop)")
    viewer.serve_forever()


def instance_viewer_data(scene, inst, feats=None, seen=None, source: str | None = None, max_points: int = 200_000, seed: int = 0):
    """ViewerData of a scene with its instances (at most ``max_points`` random points shown, as `sas3d view`)."""
    import numpy as np

    from sas3d.query.viewer import ViewerData

    keep = np.arange(scene.num_points)
    if scene.num_points > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(scene.num_points, max_points, replace=False))
    rgb = scene.colors if scene.colors is not None else np.full((scene.num_points, 3), 180, np.uint8)
    return ViewerData(scene.name, np.asarray(scene.points, np.float32)[keep], np.asarray(rgb, np.uint8)[keep],
                      None if scene.labels is None else scene.labels[keep], scene.label_set or "scannet20", None,
                      None if feats is None else feats[keep], None if seen is None else np.asarray(seen)[keep], source,
                      point_index=keep, instances=inst)


# ------------------------------------------------------------------------------------------
# sas3d eval --task instance


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``sas3d eval --task instance`` adds (the rest it shares with the semantic task)."""
    g = parser.add_argument_group("instance task (--task instance)")
    g.add_argument("--proposals", default="builtin", help="builtin | gt | a folder of proposal files per scene (see `sas3d instances --help`)")
    g.add_argument("--proposal-features", default=None, choices=["distill", "fusion", "ensemble"],
                   help="features the built-in proposals merge by (default: those of --mode)")
    g.add_argument("--proposal-labels", action="store_true", help="score a prediction folder's own labels and confidences (no labelling)")
    g.add_argument("--gt", type=Path, default=None, help="folder of ScanNet benchmark ground-truth <scene>.txt files (default: each scan's segs.json + aggregation.json)")
    g.add_argument("--label-map", type=Path, default=None, help="scannetv2-labels.combined.tsv (raw category -> NYU40); found next to the scans by default")
    g.add_argument("--instance-set", dest="instance_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an InstanceConfig field, e.g. label.nms_iou=0.5")


def run_eval(args: argparse.Namespace) -> int:
    """``sas3d eval --task instance``: ScanNet instance AP (mAP over IoU 0.50:0.90, AP50, AP25) over scenes."""
    import functools

    from sas3d.commands.eval import scene_list
    from sas3d.config import to_dict
    from sas3d.errors import InputError
    from sas3d.evaluate.instance_ap import format_ap_table, plot_instance_ap
    from sas3d.evaluate.instance_eval import evaluate_instance_scenes
    from sas3d.evaluate.interop import open_scene
    from sas3d.utils.atomic import write_json_atomic

    args.labeller = args.mode
    cfg = instance_config(args, args.labelset)
    model, voxel_size = _load_model(args, cfg)
    if cfg.labeller != "distill" and not cfg.use_proposal_labels and (args.fused is None or not args.fused.is_dir()):
        raise InputError(args.fused, f"--mode {cfg.labeller} needs --fused DIR, an existing folder of fused features")
    paths = scene_list(args.scenes)
    loaders = [functools.partial(open_scene, p, args.scene_labelset or cfg.labelset) for p in paths]
    result, scenes, agnostic = evaluate_instance_scenes(loaders, cfg, model=model, voxel_size=voxel_size, fused_dir=args.fused,
                                              gt_source=args.gt, label_map=args.label_map)
    print(format_ap_table(result))
    print(f"proposals alone (class-agnostic, ranked by their own scores): mAP {100 * agnostic.map:.1f}  AP50 {100 * agnostic.ap50:.1f}"
          f"  AP25 {100 * agnostic.ap25:.1f}")
    png = args.json.with_suffix(".png")
    plot_instance_ap(png, result, f"instances, {cfg.labeller} labeller, {cfg.proposals} proposals: AP50 {100 * result.ap50:.1f} ({len(paths)} scenes)")
    out = {"task": "instance", **result.to_json(), "scenes": scenes, "config": to_dict(cfg), "plot": png.name,
           "proposals_class_agnostic": {k: agnostic.to_json()[k] for k in ("map", "ap50", "ap25")},
           "checkpoint": None if args.checkpoint is None else str(args.checkpoint), "fused": None if args.fused is None else str(args.fused)}
    write_json_atomic(args.json, out)
    print(f"wrote {args.json} and {png}")
    return 0
