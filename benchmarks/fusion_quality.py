"""Fusion quality on the embedded default scenes with SIMULATED teachers (cf. SAS Table 3, "2D" column).

For every scene: each simulated teacher's frames are fused onto the points (multi-view mean), then the
teachers are combined with ``add``, ``mean``, ``linear``, capability-``guided`` fusion and ``confusion``
fusion (beyond SAS: each teacher weighed by how likely its predicted class is right, from the teachers'
per-class confusion on the same capability images). Each point is
classified by cosine argmax over the ScanNet20 text features and compared with the scene's labels
(mIoU over present classes, unseen points count as wrong). Capability comes from the procedural
generator (``sas3d capability`` with the same teachers). Target, as in SAS Table 3: guided beats the
best single teacher and both baselines; confusion fusion is >= guided and >= the best single teacher. Also
printed: how well that capability ranks each teacher's true per-class IoU on these scenes (Spearman over
(teacher, class) cells, per-class teacher order agreement; sas3d.capability.ranking) -- the simulated
teachers have a seeded probe-image domain gap (probe_gap).

    .venv/bin/python benchmarks/fusion_quality.py [--images-per-class 50] [--work /tmp/sas3d_fusion_bench]

About 5 minutes on 2 CPU cores (capability ~1.5 min, teacher calls + fusion ~3.5 min; teacher
outputs are cached under --work, so a rerun takes seconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/sas3d_fusion_bench"), help="dataset + capability cache")
    p.add_argument("--teachers", nargs="+", default=["simulated:lseg", "simulated:seem"], help="first = dense teacher")
    # The simulated teachers speak ScanNet20 (no "ceiling"; unknown pixels -> "other"), so their
    # capability and fusion vocabulary defaults to scannet20; SAS itself uses 'indoor' (Table 9).
    p.add_argument("--vocabulary", default="scannet20", help="capability / fusion vocabulary (SAS: indoor, Table 9)")
    p.add_argument("--images-per-class", type=int, default=50)  # SAS code value; 5 is too noisy
    p.add_argument("--n-train", type=int, default=3)
    p.add_argument("--n-val", type=int, default=3)
    p.add_argument("--n-views", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--room-seed", type=int, default=0,
                   help="seed of the generated rooms (default 0; another seed gives other rooms, e.g. to choose a setting "
                        "on rooms the reported figures do not use)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fusion config value (GuidedFusionConfig), e.g. --set confusion_rule=precision")
    args = p.parse_args()

    from sas3d.capability import Capability, ProceduralGenerator, compute_capability
    from sas3d.capability.ranking import capability_ranking, format_ranking
    from sas3d.config import apply_overrides, from_dict, to_dict
    from sas3d.demo.rooms import build_embedded_dataset
    from sas3d.evaluate.metrics import confusion_matrix, iou_acc
    from sas3d.evaluate.predict import build_class_text, classify
    from sas3d.fusion.guided import GuidedFusionConfig, fuse_teachers
    from sas3d.fusion.multiview import fuse_teachers_multiview, fusion_config_for
    from sas3d.scene.readers import load_scene
    from sas3d.teachers.registry import TeacherContext, build_teacher
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import CATCH_ALL, get_label_set

    simulated = any(t.startswith("simulated") for t in args.teachers)
    tag = "SIMULATED teachers" if simulated else "teachers"
    encoder = build_text_encoder("minilm")
    ctx = TeacherContext(text_encoder=encoder, label_set="scannet20")

    t0 = time.perf_counter()
    data = build_embedded_dataset(args.work / "embedded", n_train=args.n_train, n_val=args.n_val, n_views=args.n_views,
                                  seed=args.room_seed)
    scene_dirs = [d for split in ("train", "val") for d in data[split]]
    print(f"embedded dataset: {len(scene_dirs)} scenes ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    cap_path = args.work / f"capability_{args.vocabulary}_{args.images_per_class}.json"
    teachers = [build_teacher(spec, ctx) for spec in args.teachers]
    cap = compute_capability(
        teachers, ProceduralGenerator(), args.vocabulary, args.images_per_class, encoder,
        # One work folder per vocabulary: asking for more images per class reuses the ones already scored.
        args.work / f"capability_{args.vocabulary}.work", teacher_names=args.teachers,
    )
    cap.save(cap_path)
    cap = Capability.load(cap_path)
    print(f"capability ({tag}, procedural images, {args.images_per_class}/class): {time.perf_counter() - t0:.1f} s")

    scannet = get_label_set("scannet20")
    eval_text = build_class_text(scannet, encoder)
    vocab_text = cap.class_text(encoder)
    scores = cap.select(args.teachers)
    k = len(scannet)
    confusion = cap.confusion_for(args.teachers, cap.classes)
    fusions = ("add", "mean", "linear", "guided", "confusion")
    methods = [*args.teachers, *fusions]
    conf = {m: np.zeros((k, k + 1), dtype=np.int64) for m in methods}
    cfg = from_dict(GuidedFusionConfig, apply_overrides(to_dict(GuidedFusionConfig(temperature=args.temperature)), args.set), "--set")

    t0 = time.perf_counter()
    for d in scene_dirs:
        # The embedded scenes are already subsampled (frames 0, 20, ...): use every rendered view.
        scene = load_scene(d, frame_stride=1)
        fcfg = fusion_config_for(scene.kind)
        # Per-scene teachers with a per-frame cache: a rerun of the benchmark does no teacher calls.
        scene_ctx = TeacherContext(scene=scene, text_encoder=encoder, label_set="scannet20", cache_dir=args.work / "teacher_cache")
        per_teacher = fuse_teachers_multiview(scene, [build_teacher(spec, scene_ctx) for spec in args.teachers], fcfg, progress=False)
        fused = dict(zip(args.teachers, per_teacher))
        for method in fusions:
            fused[method] = fuse_teachers(
                per_teacher, vocab_text, method, scores, cfg,
                cap.catch_all_index, teacher_names=args.teachers, capability_source=str(cap_path),
                capability_confusion=confusion,
            )
        for m in methods:
            pred = classify(fused[m].features.float(), eval_text.embeddings, seen=fused[m].seen)
            conf[m] += confusion_matrix(pred, scene.labels, k)
    print(f"fusion + evaluation: {time.perf_counter() - t0:.1f} s")

    miou = {m: iou_acc(conf[m])["miou"] * 100 for m in methods}
    best_single = max(args.teachers, key=lambda m: miou[m])
    print(f"\n2D fused-feature mIoU on {len(scene_dirs)} embedded scenes, {tag} (ScanNet20, argmax over text):")
    print(f"{'method':>18}  {'mIoU':>6}  {'ratio vs best single':>20}")
    for m in methods:
        print(f"{m:>18}  {miou[m]:6.1f}  {miou[m] / max(miou[best_single], 1e-9):20.3f}")
    baselines = max(miou["add"], miou["linear"])
    verdict = "guided beats" if miou["guided"] > max(miou[best_single], baselines) else "guided does NOT beat"
    print(f"\n{verdict} the best single teacher ({best_single}, {miou[best_single]:.1f}) and the add/linear "
          f"baselines ({miou['add']:.1f}/{miou['linear']:.1f}) [{tag}]")
    met = miou["confusion"] >= max(miou["guided"], miou[best_single])
    print(f"confusion fusion ({cfg.confusion_model} model, {cfg.confusion_rule}, floor {cfg.confusion_floor}, temperature {cfg.confusion_temperature}): "
          f"{miou['confusion']:.1f} vs guided {miou['guided']:.1f} and best single {miou[best_single]:.1f}: "
          f"{'>= both' if met else 'NOT >= both'} [{tag}]")

    scored = np.array([c in cap.classes and c not in CATCH_ALL for c in scannet.classes])
    capability = np.where(scored, cap.scores_for(args.teachers, scannet.classes), np.nan)
    true_iou = np.stack([np.where(r["present"], r["iou"], np.nan) for r in (iou_acc(conf[t]) for t in args.teachers)])
    print("\n" + "\n".join(format_ranking(capability_ranking(capability, true_iou, args.teachers, scannet.classes), simulated)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
