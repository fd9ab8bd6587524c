"""Built-in proposal scores compared on the rooms of a finished ``benchmarks/instances.py`` run (SIMULATED teachers).

For each proposal score (``lifetime``, ``stability`` = lifetime x points, ``none``), with and without the
class-agnostic NMS, on the chosen rooms: the proposals' class-agnostic AP (every benchmark object one class,
ranked by the proposal score alone: their quality whatever the labeller) and the instance AP with the
proposals labelled by fused 2D (and, with ``--students``, by the run's OpenScene, SAS and SAS stage-1 students).
The proposals are merged by the run's fused 2D features, as the benchmark's Table-6 rows.

The default score was chosen with this script on rooms outside the benchmark's scored splits (a run with
``--rooms 9`` has 6 training rooms the 3-room benchmark never scores; one with ``--val-rooms 6`` has 3 held-out
rooms the default split never scores):

    .venv/bin/python benchmarks/proposal_scores.py --run DIR9 --split train --rooms scene9003_00,...,scene9008_00
    .venv/bin/python benchmarks/proposal_scores.py --run DIR6 --split val --rooms scene9503_00,scene9504_00,scene9505_00

Seconds per room. Not a test: it reads the run's rooms, fused features and checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = [("lifetime", None), ("lifetime", 0.5), ("stability", None), ("stability", 0.5), ("none", None), ("none", 0.5)]
# the checkpoints a benchmarks/instances.py run leaves (sas3d.pipeline's run layout)
STUDENTS = {"openscene": ("OpenScene student", "runs/openscene/last.safetensors"), "sas": ("SAS student", "runs/sas/last.safetensors"),
            "superpoint": ("SAS stage 1", "runs/sas/stage1.safetensors")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the --out folder of a finished benchmarks/instances.py run")
    p.add_argument("--split", default="train", choices=["train", "val"], help="the run's training (in place) or held-out rooms")
    p.add_argument("--rooms", default="", help="comma-separated room names (default: every room of the split)")
    p.add_argument("--students", action="store_true", help="also label with the run's students")
    p.add_argument("--json", type=Path, default=None, help="write the table here")
    args = p.parse_args()

    from instances import scene_feature_sets

    from sas3d import load_scene
    from sas3d.evaluate.instance_ap import ScenePredictions, evaluate_class_agnostic, evaluate_instances
    from sas3d.evaluate.instance_eval import nyu40_label_ids, scene_gt
    from sas3d.evaluate.predict import build_class_text
    from sas3d.geometry.superpoints import scene_superpoints
    from sas3d.instances.builtin import ProposalConfig, generate_proposals
    from sas3d.instances.labelling import LabelConfig, label_proposals
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    print("benchmarks/proposal_scores.py: built-in proposal scores on generated rooms, SIMULATED teachers")
    folder = args.run / "data" / args.split
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder; --run must be a finished benchmarks/instances.py --out folder")
    rooms = [r for r in args.rooms.split(",") if r] or sorted(d.name for d in folder.iterdir() if d.is_dir())
    students = {key: load_checkpoint(args.run / path)[0].eval() for key, (_, path) in STUDENTS.items()} if args.students else {}
    ls = get_label_set("scannet20")
    ct = build_class_text(ls, build_text_encoder("minilm"))
    labellers = {"fused": "fused 2D (guided)", **{k: STUDENTS[k][0] for k in students}}
    gts, agnostic, labelled = [], {}, {}
    for name in rooms:
        scene = load_scene(folder / name)
        gts.append(scene_gt(scene))
        feats = scene_feature_sets(scene, args.run / "fused" / "guided" / f"{name}.safetensors", students, ct.embeddings)
        spx = scene_superpoints(scene, ProposalConfig().superpoints)
        for score, nms in VARIANTS:
            props = generate_proposals(scene.points, spx, feats["fused"], ProposalConfig(score=score, nms_iou=nms), faces=scene.faces)
            agnostic.setdefault((score, nms), []).append(props)
            for key in labellers:
                inst = label_proposals(props, feats[key], ct.embeddings, list(ls.classes), LabelConfig())
                labelled.setdefault((score, nms, key), []).append(ScenePredictions(inst.masks, nyu40_label_ids(inst), inst.scores, name))
        print(f"  {name}: done", flush=True)

    rows = []
    for score, nms in VARIANTS:
        a = evaluate_class_agnostic(gts, agnostic[(score, nms)])
        row = {"score": score, "nms_iou": nms, "class_agnostic": {"map": 100 * a.map, "ap50": 100 * a.ap50}}
        for key in labellers:
            r = evaluate_instances(gts, labelled[(score, nms, key)])
            row[key] = {"map": 100 * r.map, "ap50": 100 * r.ap50}
        rows.append(row)
    print(f"\n{len(rooms)} rooms ({args.split}) of {args.run}: mAP / AP50, built-in proposals merged by fused 2D")
    head = f"{'score':<10}{'NMS':>6}  {'class-agnostic':>16}" + "".join(f"  {labellers[k]:>22}" for k in labellers)
    print(head + "\n" + "-" * len(head))
    for row in rows:
        print(f"{row['score']:<10}{'-' if row['nms_iou'] is None else row['nms_iou']:>6}  "
              + f"{row['class_agnostic']['map']:7.1f} / {row['class_agnostic']['ap50']:5.1f}"
              + "".join(f"  {row[k]['map']:13.1f} / {row[k]['ap50']:5.1f}" for k in labellers))
    if args.json:
        from sas3d.utils.atomic import write_json_atomic

        write_json_atomic(args.json, {"simulated": True, "run": str(args.run), "split": args.split, "rooms": rooms, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
