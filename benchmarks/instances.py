"""Benchmark: open-vocabulary 3D instance segmentation on generated rooms, in the layout of SAS Table 6.

Teachers are SIMULATED (sas3d/configs/teachers_simulated.yaml): the AP figures show the instance
pipeline working end to end, not what real LSeg / SEEM / Mask3D would score.

1. Builds the embedded procedural rooms (``--rooms`` training rooms, ``--val-rooms`` held-out
   rooms; their instance annotation is ScanNet's segs.json + aggregation.json) and runs the SAS
   pipeline at the scale of ``sas3d demo`` (its ``DEMO_*`` constants; ``run_pipeline`` reuses
   finished stages) to get the guided-fusion 2D features and two students: the OpenScene recipe
   (pixel-point distillation) and the SAS recipe (+ superpoint + TESD).
2. On every room of both splits (in place: the training rooms the students were distilled on, labels
   used only for scoring; held out: rooms they never saw): class-agnostic proposals, either built in (superpoints merged by the
   similarity of point features over their contact graph, several granularities; one set shared by
   every labeller, as Table 6 shares Mask3D's) or the ground-truth instances (an upper bound on what
   labelling can reach), labelled by fused 2D, by the OpenScene student and by the SAS student
   (and, unless ``--no-reference``, by the demo's reference student trained on ground-truth labels
   for the same epochs: not a SAS stage, it shows what a student of this budget can do at all).
   The first ``--proposal-features`` source makes the primary built-in set: by default the fused
   2D features, which both students are distilled from, so the proposals favour neither student
   (proposals from one student's own features would entangle proposal quality with that labeller);
   the others (default: the SAS student's features) are reported as extra rows.
3. ScanNet instance AP (mAP over IoU 0.50:0.90, AP50, AP25; 18 classes, >= 100 vertices) for each split
   (in place, held out), with two checks computed from this run per split: SAS student >= OpenScene student, and
   built-in proposals >= 50 % of the ground-truth-proposal AP50 with the same labeller.
4. A picture of the first in-place room (ground-truth instances | built-in proposals labelled by fused
   2D | by the SAS student) and report.json under ``--out``.

    .venv/bin/python benchmarks/instances.py [--rooms 3] [--val-rooms 3] [--epochs 60] [--out runs/bench_instances]
    .venv/bin/python benchmarks/instances.py --epochs 4      # quick check
    .venv/bin/python benchmarks/instances.py --rooms 9 --out runs/bench_instances9   # the README's scale check
    .venv/bin/python benchmarks/instances.py --rooms 9 --stage1 --ablate --ablate-seeds 3 --out runs/bench_instances9
        # + stage-1 students with one SAS Eq. 10 ingredient each, and the OpenScene / SP-target students over 3 seeds
    .venv/bin/python benchmarks/instances.py --stage1 --ablate --ablate-seeds 3 --scores prob,similarity
        # + the built-in proposals ranked by the class probability alone and by the cosine (same labels)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sas3d.commands.demo import (  # noqa: E402
    DEMO_EPOCHS, DEMO_FINAL_LR, DEMO_IMAGES_PER_CLASS, DEMO_LR, DEMO_PLANES, DEMO_VOXEL, INPLACE_OVERRIDES)

LABELLERS = {"fused": "fused 2D (guided)", "openscene": "OpenScene student (3D distill)", "sas": "SAS student (SP + TESD)"}
SHORT = {"fused": "fused 2D", "openscene": "OpenScene", "sas": "SAS", "superpoint": "SAS stage 1", "supervised": "supervised",
         "fused+sp": "OS + L_sp", "sptarget": "OS + SP target", "sp_both": "OS + SP target + L_sp"}
STAGE1 = {"superpoint": "SAS stage 1 (+ superpoint)"}  # --stage1: the SAS run before TESD, trained as long as the OpenScene student
REFERENCE = {"supervised": "reference: student on GT labels"}  # not a SAS stage: what the student reaches with perfect labels
PAPER_TABLE6 = {"OpenScene (3D distill)": (19.8, 25.7, 30.4), "OpenIns3D": (19.9, 28.9, 38.9), "SAS": (25.1, 31.7, 36.7)}


# --ablate: students trained as long as the OpenScene student and SAS stage 1, on the OpenScene recipe
# (1 - cos(F3D, target), lr decayed over those epochs) plus the --set values: one SAS Eq. 10 ingredient each, and
# both (SAS stage 1 on the OpenScene schedule); --ablate-seeds N repeats the OpenScene recipe, "both" and the full SAS
# recipe (SP + TESD, the pipeline's SAS student) with N - 1 more training seeds (same rooms, same fused features), so a
# difference can be set against what a seed alone makes
def ablations(seed: int, seeds: int) -> dict[str, tuple[str, list[str]]]:
    runs = {"fused+sp": ("OpenScene + L_sp (fused target)", ["loss.superpoint=1.0"]),
            "sptarget": ("OpenScene, SP-mean target (no L_sp)", ["loss.point_target=superpoint"]),
            "sp_both": ("OpenScene, SP-mean target + L_sp", ["loss.point_target=superpoint", "loss.superpoint=1.0"])}
    for k in range(1, seeds):
        runs[f"os_s{k}"] = (f"OpenScene, training seed {seed + k}", [f"seed={seed + k}"])
        runs[f"sp_both_s{k}"] = (f"OS, SP target + L_sp, seed {seed + k}", runs["sp_both"][1] + [f"seed={seed + k}"])
        runs[f"sas_s{k}"] = (f"SAS student (SP + TESD), seed {seed + k}", [f"seed={seed + k}"])
    return runs


def ablation_recipe(key: str) -> str:
    """The training recipe of an --ablate run: the full SAS recipe for its seed repeats, else OpenScene's."""
    return "sas" if key.startswith("sas_s") else "openscene"


def nms_iou_arg(text: str) -> float | None:
    """--proposal-nms: an IoU in (0, 1] or 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected an IoU in (0, 1] or 'none', got {text!r}")
    return value


def short_name(key: str) -> str:
    """Short labeller name for one-line summaries (ablation keys carry their seed)."""
    if key.startswith(("os_s", "sp_both_s", "sas_s")):
        base, k = key.rsplit("_s", 1)
        return f"{SHORT['openscene' if base == 'os' else base]} seed+{k}"
    return SHORT[key]


SEED_GROUPS = {"OpenScene recipe": ("openscene", "os_s"), "SP target + L_sp (SAS stage 1, OpenScene schedule)": ("sp_both", "sp_both_s"),
               "SAS recipe (SP + TESD)": ("sas", "sas_s")}


def seed_summary(results, miou, named, primary, keys, extra_scores=()) -> dict[str, dict[str, list[float]]]:
    """{group: {measure: [value per training seed]}} for the recipes --ablate-seeds repeats (+ built-in AP50 under each --scores)."""
    out, mkey = {}, {"openscene": "distill:pixel_point", "sas": "distill:tesd"}  # the pipeline's row keys of its students
    for group, (first, prefix) in SEED_GROUPS.items():
        members = [first] + sorted(k for k in keys if k.startswith(prefix))
        if len(members) < 2:
            continue
        out[group] = {"ground-truth-proposal AP50": [100 * results[("ground truth", k)].ap50 for k in members],
                      f"{primary} AP50": [100 * results[(primary, k)].ap50 for k in members],
                      **{f"{primary} AP50, score {x}": [100 * results[(f"{primary}, score {x}", k)].ap50 for k in members]
                         for x in extra_scores},
                      "semantic mIoU": [100 * miou[mkey.get(k, f"distill:{k}")] for k in members],
                      "objects named right": [float(named[k][0]) for k in members]}
    return out


def scene_feature_sets(scene, fused_path, students, class_text):
    """{labeller key: PointFeatureSet} for one room: fused 2D and each student (through the instance helper)."""
    from sas3d.fusion.features import PointFeatures
    from sas3d.instances.features import labeller_features, student_point_features

    pf = PointFeatures.load(fused_path)
    out = {"fused": labeller_features("fusion", fused=pf.features, seen=pf.seen)}
    for key, model in students.items():
        out[key] = labeller_features("distill", feat3d=student_point_features(model, scene, DEMO_VOXEL))
    return out


def train_ablations(cfg, train_dirs, fused_dir, out: Path, stage1_epochs: int, runs: dict[str, list[str]]) -> dict:
    """Train the --ablate students (each in ``out/<key>``; a finished run is reused) side by side, one core each,
    in the pipeline's worker pool; returns {key: last checkpoint}. OpenScene-recipe runs train ``stage1_epochs``;
    full SAS-recipe runs (:func:`ablation_recipe`) the pipeline's ``cfg.epochs``, stage 1 then TESD, as its SAS student."""
    from sas3d.pipeline.students import train_in_workers, training_overrides

    common = training_overrides(cfg) + ["engine.procs=1", "engine.loader_workers=0", "engine.threads=1"]
    dirs = {k: out / k.replace("+", "_") for k in runs}
    epochs = {k: cfg.epochs if ablation_recipe(k) == "sas" else stage1_epochs for k in runs}
    jobs = [(ablation_recipe(k), common + extra, epochs[k], stage1_epochs, [str(d) for d in train_dirs], str(fused_dir), str(dirs[k]))
            for k, extra in runs.items()]
    results = train_in_workers(cfg, jobs, max(1, min(len(jobs), os.cpu_count() or 1)),
                               [(dirs[k] / "metrics.csv", epochs[k]) for k in runs])
    return {k: Path(checkpoints["last"]) for k, (checkpoints, _) in zip(runs, results)}


def gt_instances_named_right(inst, gt_ids, nyu40_ids, class_ids, min_points):
    """(right, scored): of the ground-truth instances in the benchmark classes with >= ``min_points``
    vertices, how many a labeller gave their own class (``inst`` = the ground-truth proposals, labelled)."""
    right = scored = 0
    for mask, label in zip(inst.masks, nyu40_ids):
        if mask.nnz == 0:
            continue
        gid = int(gt_ids[mask.indices[0]])  # a ground-truth proposal is one instance: any of its points names it
        if gid // 1000 in class_ids and mask.nnz >= min_points:
            scored += 1
            right += int(label) == gid // 1000
    return right, scored


def render_instances(scene, point_ids, frame):
    """Render the room mesh from one camera frame with per-vertex instance colours -> (RGB image, per-pixel instance id)."""
    from sas3d.geometry.raster import face_normals, headlight_shading, rasterize, shade
    from sas3d.instances.export import colors_for_point_ids

    _, face_id = rasterize(scene.points, scene.faces, frame.intrinsics, frame.pose, frame.width, frame.height)
    img = shade(face_id, scene.faces, colors_for_point_ids(point_ids)).astype(np.float32)
    light = headlight_shading(face_id, face_normals(scene.points, scene.faces), frame.intrinsics, frame.pose)
    ids = np.where(face_id >= 0, np.asarray(point_ids)[scene.faces[np.clip(face_id, 0, None), 0]], -1)
    return (img * light[..., None]).clip(0, 255).astype(np.uint8), ids


def write_picture(panels, path, suptitle):
    """Panels of (image, per-pixel instance ids, {instance id: name}, title); names are drawn at each visible instance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sas3d.utils.atomic import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.8))
    for ax, (img, ids, names, title) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img)
        for i, name in names.items():
            ys, xs = np.nonzero(ids == i)
            if len(xs) > 300:  # large enough to read a label on
                ax.text(xs.mean(), ys.mean(), name, fontsize=7, ha="center", va="center", color="black",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def picture_panels(picture, classes, primary):
    """GT instances | primary built-in proposals labelled by fused 2D | by the SAS student, seen from the
    camera frame that shows the most ground-truth objects."""
    from sas3d.instances.scannet_gt import NYU40_NAMES

    scene, gt, _ = picture["sas"]
    uniq, gt_index = np.unique(gt.ids, return_inverse=True)
    gt_ids = gt_index.reshape(-1) - (1 if uniq[0] == 0 else 0)
    gt_names = {k: NYU40_NAMES.get(int(u) // 1000, "?") for k, u in enumerate(uniq[uniq > 0])}
    objects = {k for k, n in gt_names.items() if n not in ("wall", "floor")}
    renders = [render_instances(scene, gt_ids, f) for f in scene.frames]
    best = int(np.argmax([len(objects & set(np.unique(ids).tolist())) for _, ids in renders]))
    frame = scene.frames[best]
    panels = [(*renders[best], {k: n for k, n in gt_names.items() if k in objects}, f"{scene.name}: ground-truth instances")]
    for lkey in ("fused", "sas"):
        inst = picture[lkey][2]
        keep = np.flatnonzero(~np.isin(np.asarray(classes)[inst.classes], ["wall", "floor"]))[:20]
        top = inst.subset(keep)
        img, ids = render_instances(scene, top.point_ids(), frame)
        names = {i: f"{classes[c]} {s:.2f}" for i, (c, s) in enumerate(zip(top.classes, top.scores))}
        what = f"{len(top)} best objects (wall/floor not shown)" if len(top) else "no object: every proposal labelled wall/floor"
        panels.append((img, ids, names, f"{primary} labelled by {LABELLERS[lkey]}\n{what}"))
    return panels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_instances"))
    parser.add_argument("--rooms", type=int, default=3, help="training rooms (default 3, as the demo)")
    parser.add_argument("--val-rooms", type=int, default=3, help="held-out rooms scored (default 3: office, bedroom, kitchen)")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--paper-student", action="store_true", help="the papers' student settings instead of the in-place ones")
    parser.add_argument("--augment", action="store_true",
                        help="train the students with augmentation (the papers' setting; off by default, as sas3d demo)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"distillation epochs (default {DEMO_EPOCHS}, as the demo)")
    parser.add_argument("--images-per-class", type=int, default=DEMO_IMAGES_PER_CLASS)
    parser.add_argument("--proposal-features", default="fused,sas",
                        help="comma-separated feature sources for built-in proposals (fused, openscene, sas); the first is the primary set")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference student trained on ground-truth labels (~2 min)")
    parser.add_argument("--stage1", action="store_true",
                        help="also label with the SAS run's stage-1 checkpoint (+ superpoint, before TESD; as many epochs as the OpenScene student)")
    parser.add_argument("--ablate", action="store_true",
                        help="also train and label with stage-1 students that add one SAS Eq. 10 ingredient each to the OpenScene "
                             "recipe: the superpoint term L_sp, or the superpoint-mean point target (~2 x an OpenScene student's time)")
    parser.add_argument("--ablate-seeds", type=int, default=1, metavar="N",
                        help="with --ablate: also train the OpenScene recipe and SAS stage 1 on the OpenScene schedule with N - 1 "
                             "more training seeds, and print each one's spread over the N seeds")
    parser.add_argument("--scores", default="",
                        help="comma-separated extra confidence scores (sas3d.instances.labelling.SCORES: prob, similarity) for "
                             "the primary built-in proposals: the same labels ranked another way, extra rows (AP depends on the ranking)")
    parser.add_argument("--proposal-score", default="stability", choices=["stability", "lifetime", "none"],
                        help="built-in proposal score (default stability = lifetime x points; lifetime: the default before stability was)")
    parser.add_argument("--proposal-nms", default=0.5, type=nms_iou_arg,
                        help="class-agnostic NMS IoU of the built-in proposals in (0, 1], or 'none' (default 0.5)")
    parser.add_argument("--picture", type=Path, default=None, help="also copy the labelled-room picture here (e.g. docs/instances.png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    sources = [s.strip() for s in args.proposal_features.split(",") if s.strip()]
    if not sources or any(s not in LABELLERS for s in sources):
        parser.error(f"--proposal-features: choose from {', '.join(LABELLERS)}")
    primary = f"built-in ({SHORT[sources[0]]})"
    extra_scores = [x.strip() for x in args.scores.split(",") if x.strip()]
    from sas3d.instances.labelling import SCORES

    if any(x not in SCORES or x == "prob_x_agreement" for x in extra_scores):
        parser.error(f"--scores: choose from {', '.join(x for x in SCORES if x != 'prob_x_agreement')} (prob_x_agreement is the default)")
    ablation = ablations(args.seed, args.ablate_seeds) if args.ablate else {}
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"

    from sas3d import load_scene
    from sas3d.pipeline.config import PipelineConfig
    from sas3d.pipeline.runner import run_pipeline
    from sas3d.demo.rooms import build_embedded_dataset
    from sas3d.evaluate.instance_ap import InstanceAPConfig, ScenePredictions, evaluate_class_agnostic, evaluate_instances
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes
    from sas3d.evaluate.instance_eval import nyu40_label_ids, scene_gt
    from sas3d.evaluate.predict import build_class_text
    from sas3d.geometry.superpoints import scene_superpoints
    from sas3d.instances.builtin import ProposalConfig, generate_proposals
    from sas3d.instances.labelling import LabelConfig, label_proposals
    from sas3d.instances.segment import gt_proposals
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set
    from sas3d.utils.atomic import write_json_atomic

    print("benchmarks/instances.py: SAS Table 6 layout on generated rooms with SIMULATED 2D teachers (not real-model results)")
    start = time.perf_counter()
    data = build_embedded_dataset(args.out / "data", n_train=args.rooms, n_val=args.val_rooms, n_views=args.views,
                                  seed=args.seed, progress=not args.no_progress)
    cfg = PipelineConfig(images_per_class=args.images_per_class, epochs=args.epochs, voxel_size=DEMO_VOXEL, lr=DEMO_LR,
                         final_lr=DEMO_FINAL_LR, batch_size=1, model_options={"planes": DEMO_PLANES, "init_dim": DEMO_PLANES[0]},
                         augment=args.augment, train_overrides=[] if args.paper_student else list(INPLACE_OVERRIDES),
                         ggsd=False, supervised_reference=not args.no_reference, parallel_runs=os.cpu_count() or 1, seed=args.seed,
                         progress=not args.no_progress, queries=[], query_renders=0)
    report = run_pipeline(data["train"], data["val"], args.out, cfg, log=lambda s: print(s, flush=True))
    pipeline_s = time.perf_counter() - start
    fused_dir = args.out / report.artefacts["fused_guided"]
    students = {"openscene": load_checkpoint(args.out / report.artefacts["checkpoint_pixel_point"])[0].eval(),
                "sas": load_checkpoint(args.out / report.artefacts["checkpoint_tesd"])[0].eval()}
    labellers = dict(LABELLERS)
    if args.stage1:
        students["superpoint"] = load_checkpoint(args.out / report.artefacts["checkpoint_superpoint"])[0].eval()
        labellers.update(STAGE1)
    if args.ablate:
        from sas3d.distill.config import load_train_config
        from sas3d.pipeline.students import training_overrides

        stage1_epochs = load_train_config("sas", training_overrides(cfg), epochs=cfg.epochs).stage1_epochs
        print(f"== ablation: {'; '.join(v[0] for v in ablation.values())} ({stage1_epochs} epochs each; a full SAS-recipe seed {cfg.epochs})", flush=True)
        t_abl = time.perf_counter()
        runs = {k: extra for k, (_, extra) in ablation.items()}
        for key, path in train_ablations(cfg, data["train"], fused_dir, args.out / "ablation", stage1_epochs, runs).items():
            students[key] = load_checkpoint(path)[0].eval()
            labellers[key] = ablation[key][0]
        print(f"   ablation students: {(time.perf_counter() - t_abl) / 60:.1f} min", flush=True)
    if not args.no_reference:
        students["supervised"] = load_checkpoint(args.out / report.artefacts["checkpoint_supervised"])[0].eval()
        labellers.update(REFERENCE)

    t_inst = time.perf_counter()
    ls = get_label_set("scannet20")
    ct = build_class_text(ls, build_text_encoder(cfg.text_encoder))
    label_cfg = LabelConfig()
    prop_cfg = ProposalConfig(score=args.proposal_score, nms_iou=args.proposal_nms)
    splits = {"in_place": ("in place: the rooms the students were distilled on (labels only for scoring)", data["train"]),
              "held_out": ("held out: rooms the students never saw", data["val"])}
    all_results, all_agnostic, all_checks, counts, picture, mious = {}, {}, {}, [], {}, {}
    ap_cfg, named, summary = InstanceAPConfig(), {split: {} for split in splits}, {}
    for split, (description, dirs) in splits.items():
        # the reference student was trained on the training rooms' labels: it is no reference in place
        split_labellers = {k: v for k, v in labellers.items() if not (split == "in_place" and k in REFERENCE)}
        miou = {k: v.miou for k, v in ((r.key, r) for r in report.split(split).rows)}
        for key in (k for k in split_labellers if k in ablation):  # not pipeline rows: scored here, as the pipeline scores its students
            miou[f"distill:{key}"] = float(evaluate_scenes([lambda d=d: load_scene(d) for d in dirs], EvalConfig(mode="distill"),
                                                           model=students[key], voxel_size=DEMO_VOXEL, progress=False).metrics["miou"])
        mious[split] = miou
        gts, preds, agnostic = [], {}, {}
        for d in dirs:
            scene = load_scene(d)
            gt = scene_gt(scene)
            feats = scene_feature_sets(scene, fused_dir / f"{scene.name}.safetensors", students, ct.embeddings)
            spx = scene_superpoints(scene, prop_cfg.superpoints)
            proposal_sets = {f"built-in ({SHORT[k]})": generate_proposals(scene.points, spx, feats[k], prop_cfg, faces=scene.faces) for k in sources}
            proposal_sets["ground truth"] = gt_proposals(gt.ids)
            gts.append(gt)
            counts.append({"split": split, "scene": scene.name, "gt_instances": int(len(np.unique(gt.ids[gt.ids >= 1000]))),
                           **{f"{k} proposals": len(v) for k, v in proposal_sets.items()}})
            for pname, props in proposal_sets.items():
                agnostic.setdefault(pname, []).append(props)
                for lkey in split_labellers:
                    inst = label_proposals(props, feats[lkey], ct.embeddings, list(ls.classes), label_cfg)
                    nyu40 = nyu40_label_ids(inst)
                    preds.setdefault((pname, lkey), []).append(ScenePredictions(inst.masks, nyu40, inst.scores, scene.name))
                    if pname == "ground truth":  # how many ground-truth objects each labeller names right (a count, beside AP)
                        r_, n_ = gt_instances_named_right(inst, np.asarray(gt.ids), nyu40, ap_cfg.class_ids, ap_cfg.min_region_size)
                        named[split][lkey] = [a + b for a, b in zip(named[split].get(lkey, [0, 0]), (r_, n_))]
                    for score in extra_scores if pname == primary else []:  # same labels, ranked by another confidence
                        alt = label_proposals(props, feats[lkey], ct.embeddings, list(ls.classes), LabelConfig(score=score))
                        preds.setdefault((f"{pname}, score {score}", lkey), []).append(
                            ScenePredictions(alt.masks, nyu40_label_ids(alt), alt.scores, scene.name))
                    if split == "in_place" and len(gts) == 1 and pname == primary:  # the first room's labelled instances, for the picture
                        picture[lkey] = (scene, gt, inst)
        results = {k: evaluate_instances(gts, v) for k, v in preds.items()}
        all_results[split] = results
        all_agnostic[split] = {k: evaluate_class_agnostic(gts, v) for k, v in agnostic.items()}

        title = (f"Instance segmentation, {description}: {len(dirs)} generated rooms ({args.rooms} training rooms, "
                 f"{args.epochs} epochs), SIMULATED teachers; built-in (X) = proposals merged by the features of X")
        print()
        print(title)
        width = max(22, *(len(p) + 2 for p, _ in results))
        print(f"{'proposals':<{width}}{'labeller':<38}{'mAP':>7}{'AP50':>7}{'AP25':>7}")
        print("-" * (width + 59))
        for (pname, lkey), r in results.items():
            print(f"{pname:<{width}}{split_labellers[lkey]:<38}{100 * r.map:7.1f}{100 * r.ap50:7.1f}{100 * r.ap25:7.1f}")
        print("proposals alone (class-agnostic mAP / AP50 / AP25, ranked by their own scores; labels aside): "
              + "; ".join(f"{k} {100 * r.map:.1f} / {100 * r.ap50:.1f} / {100 * r.ap25:.1f}" for k, r in all_agnostic[split].items()))
        print(f"semantic mIoU of the labellers on the same rooms: fused 2D {100 * miou['fusion:guided']:.1f}, "
              f"OpenScene student {100 * miou['distill:pixel_point']:.1f}, SAS student {100 * miou['distill:tesd']:.1f}"
              + (f", SAS stage 1 {100 * miou['distill:superpoint']:.1f}" if "superpoint" in split_labellers else "")
              + (f", reference student {100 * miou['distill:supervised']:.1f}" if "distill:supervised" in miou else "")
              + "".join(f", {short_name(k)} {100 * miou[f'distill:{k}']:.1f}" for k in ablation if f"distill:{k}" in miou))

        print("ground-truth objects named right (class of the mean feature; benchmark classes, >= 100 vertices): "
              + ", ".join(f"{short_name(k)} {r_}/{n_}" for k, (r_, n_) in named[split].items()))
        summary[split] = seed_summary(results, miou, named[split], primary, ablation, extra_scores)
        for group, measures in summary[split].items():
            print(f"{group}, over {len(next(iter(measures.values())))} training seeds (mean, min-max): "
                  + "; ".join(f"{m} {np.mean(v):.1f} ({min(v):.1f}-{max(v):.1f})" for m, v in measures.items()))

        def ratio(a: float, b: float) -> float:
            return a / b if b > 0 else float("nan")

        checks = {}  # None: not decidable in this run (the reference is 0)
        for pname in (primary, *(f"{primary}, score {x}" for x in extra_scores), "ground truth"):
            s_, o = results[(pname, "sas")].ap50, results[(pname, "openscene")].ap50
            checks[f"SAS student >= OpenScene student, {pname} proposals (AP50 {100 * s_:.1f} vs {100 * o:.1f}, {ratio(s_, o):.2f}x)"] = \
                None if s_ == o == 0 else s_ >= o
        for lkey, lname in LABELLERS.items():
            b_, g = results[(primary, lkey)].ap50, results[("ground truth", lkey)].ap50
            checks[f"{primary} >= 50% of ground-truth-proposal AP50, {lname} ({100 * b_:.1f} / {100 * g:.1f} = {ratio(b_, g):.2f})"] = \
                None if g == 0 else b_ >= 0.5 * g
        print()
        for name, ok in checks.items():
            print(f"  [{'--' if ok is None else 'ok' if ok else 'NO'}] {name}" + (" -- undecidable: the reference AP50 is 0" if ok is None else ""))
        all_checks[split] = checks
    print("\nSAS Table 6 (ScanNet v2 val, Mask3D proposals, real models), for the layout: "
          + "; ".join(f"{k} {a} / {b} / {c}" for k, (a, b, c) in PAPER_TABLE6.items()))
    inst_s = time.perf_counter() - t_inst

    if picture:
        panels = picture_panels(picture, list(ls.classes), primary)
        png = args.out / "instances.png"
        write_picture(panels, png, "SIMULATED teachers; generated room (sas3d.demo.rooms)")
        if args.picture is not None:
            write_picture(panels, args.picture, "SIMULATED teachers; generated room (sas3d.demo.rooms)")
        print(f"\npicture: {png}")

    elapsed = time.perf_counter() - start
    out = {"simulated": True, "note": "teachers are SIMULATED from ground-truth renders; not real-model results", "title": title,
           "splits": {split: {"rows": [{"proposals": p, "labeller": labellers[k], **r.to_json()} for (p, k), r in results.items()],
                              "proposals_class_agnostic": {k: {m: r.to_json()[m] for m in ("map", "ap50", "ap25")}
                                                           for k, r in all_agnostic[split].items()},
                              "checks": {k: None if v is None else bool(v) for k, v in all_checks[split].items()},
                              "semantic_miou": mious[split],
                              "gt_objects_named_right": {k: {"right": r_, "scored": n_} for k, (r_, n_) in named[split].items()},
                              "over_training_seeds": summary.get(split, {})}
                     for split, results in all_results.items()},
           "scenes": counts,
           "config": {"label": label_cfg.__dict__, "extra_scores": extra_scores, "proposals": {"levels": prop_cfg.levels, "adjacency_radius": prop_cfg.adjacency_radius,
                                                                 "min_points": prop_cfg.min_points, "features": sources,
                                                                 "score": prop_cfg.score, "nms_iou": prop_cfg.nms_iou},
                      "rooms": args.rooms, "val_rooms": args.val_rooms, "epochs": args.epochs,
                      "paper_student": args.paper_student, "augment": args.augment,
                      "ablations": {v[0]: v[1] for v in ablation.values()}},
           "timings_s": {"pipeline (data, fusion, training)": round(pipeline_s, 1), "instances (proposals, labelling, AP)": round(inst_s, 1),
                         "total": round(elapsed, 1)}}
    write_json_atomic(args.out / "report.json", out)
    print(f"report: {args.out / 'report.json'}   pipeline {pipeline_s / 60:.1f} min, instances {inst_s:.0f} s, total {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
