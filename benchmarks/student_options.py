"""Benchmark: what keeps the in-place SAS student from erasing small classes (one row per option).

The SAS student (superpoint distillation, then TESD) is distilled **in place** on scans whose fused
2D features an earlier run wrote, and scored on the same scans (labels only for scoring), once per
option set: the papers' student (``none``: geometry-only input, unweighted losses) and each of the
``loss.balance`` / ``data.input`` / ``data.sampling`` / ``loss.target_ce`` options alone and together.
Every row prints mIoU (``3D``: after TESD, ``+SP``: after stage 1, each also with BatchNorm's running
averages, ``rBN``, instead of the scene's own statistics that ``model.norm_stats: auto`` picks for
these one-scene-per-step students; see ``sas3d.models.norm``), the guided-2D mIoU of the same scans,
the 2D-3D ensemble, and the per-class IoU of the small and
wall-embedded classes; a class is *lost* when guided 2D gets >= 50 IoU on it and the student < 80 %
of that. Teachers are SIMULATED (their fused features come from the runs named below).

Datasets (each an earlier run's folder; missing ones are skipped with a note):

- ``demo``: the 3 training rooms of ``make demo`` (``runs/demo``), 60 epochs = 180 steps.
- ``real``: ``benchmarks/real_scan.py`` (``runs/bench_real``): the real ScanNet scene0470_00 with
  the shipped LSeg-/SEEM-like teachers, 300 steps.
- ``unseen``: ``benchmarks/real_scan.py --views 60 --capability oracle --teacher
  simulated:benchmarks/teachers_unseen.yaml#unseen-dense --teacher ...#unseen-mask --out
  runs/bench_real_unseen``: the same scan with two teachers this project's settings were never
  tuned on, fused with their true per-class IoU as capability (the check of the issue that asked
  for this table), 300 steps.

    .venv/bin/python benchmarks/student_options.py [--datasets demo real unseen] [--out runs/bench_student_options]

Finished runs (``<out>/<dataset>/<option>/result.json``) are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# tqdm reads TQDM_* once, when first imported (the sas3d imports below import it): set it before them
os.environ.setdefault("TQDM_DISABLE", "1")

from sas3d.commands.demo import DEMO_FINAL_LR, DEMO_LR, DEMO_PLANES, DEMO_VOXEL  # noqa: E402
from sas3d.pipeline.report import classes_lost  # noqa: E402

OPTIONS = {  # name -> --set values on top of the SAS recipe at demo scale (the papers' student: none)
    "papers' student": [],
    "balance=class": ["loss.balance=class"],
    "input=rgb": ["data.input=rgb"],
    "target_ce": ["loss.target_ce=1.0"],
    "balance=class + rgb": ["loss.balance=class", "data.input=rgb"],
    "balance=class + rgb + sampling=class": ["loss.balance=class", "data.input=rgb", "data.sampling=class"],
    "balance=superpoint + rgb": ["loss.balance=superpoint", "data.input=rgb"],
    "balance=cluster + rgb": ["loss.balance=cluster", "data.input=rgb"],
    "balance=class + rgb + target_ce": ["loss.balance=class", "data.input=rgb", "loss.target_ce=1.0"],
    "balance=cluster + rgb + target_ce": ["loss.balance=cluster", "data.input=rgb", "loss.target_ce=1.0"],
}
DATASETS = {  # name -> (run folder, scans inside it, epochs)
    "demo": (Path("runs/demo"), "data/train/*", 60),
    "real": (Path("runs/bench_real"), "scene0470_00", 300),
    "unseen": (Path("runs/bench_real_unseen"), "scene0470_00", 300),
}
SMALL = ["door", "window", "picture", "chair", "table", "otherfurniture", "toilet", "refrigerator"]


def run_option(scans: list[Path], fused: Path, out: Path, epochs: int, extra: list[str]) -> dict:
    """Distil in place with ``extra``; return {stage1|final: scores} and the seconds it took."""
    from sas3d import load_scene
    from sas3d.distill.config import load_train_config
    from sas3d.distill.trainer import train
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.models.norm import set_model_norm_stats

    common = [f"data.voxel_size={DEMO_VOXEL}", f"optim.lr={DEMO_LR}", f"optim.final_lr={DEMO_FINAL_LR}", "optim.batch_size=1",
              f"model.options={{planes: {DEMO_PLANES}, init_dim: {DEMO_PLANES[0]}}}", "schedule.keep_checkpoints=1",
              "data.augment=false", "schedule.checkpoint_every=1000"]
    cfg = load_train_config("sas", common + extra, epochs=epochs)
    start = time.perf_counter()
    if not (out / "stage1.safetensors").is_file():
        shutil.rmtree(out, ignore_errors=True)
        train(cfg, scans, fused, out, stop_after=cfg.stage1_epochs)
        shutil.copyfile(out / "last.safetensors", out / "stage1.safetensors")
    train(cfg, scans, fused, out, resume=True)
    seconds = time.perf_counter() - start
    scenes = [load_scene(s) for s in scans]

    def scores(mode: str, checkpoint: Path | None, norm_stats: str | None = None) -> dict:
        model = None if checkpoint is None else load_checkpoint(checkpoint)[0]
        if norm_stats is not None:  # override what training stored (sas3d.models.norm)
            set_model_norm_stats(model, norm_stats)
        m = evaluate_scenes(scenes, EvalConfig(mode=mode), model=model, voxel_size=cfg.data.voxel_size, fused_dir=fused, progress=False)
        return {"miou": float(m.metrics["miou"]),
                "per_class": {c: float(m.metrics["iou"][i]) for i, c in enumerate(m.classes) if m.metrics["present"][i]}}

    return {"stage1": scores("distill", out / "stage1.safetensors"), "final": scores("distill", out / "last.safetensors"),
            # the same students normalised with BatchNorm's running averages (the papers' inference)
            "stage1_running": scores("distill", out / "stage1.safetensors", "running"),
            "final_running": scores("distill", out / "last.safetensors", "running"),
            "ensemble": scores("ensemble", out / "last.safetensors"), "guided": scores("fusion", None),
            "seconds": seconds, "set": extra, "epochs": epochs, "steps": epochs * len(scans)}




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS), metavar="OPTION")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_student_options"))
    args = parser.parse_args()
    print("benchmarks/student_options.py: in-place SAS student per option, SIMULATED teachers, labels only for scoring")
    for name in args.datasets:
        folder, pattern, epochs = DATASETS[name]
        scans = sorted(folder.glob(pattern))
        fused = folder / "fused" / "guided"
        if not scans or not fused.is_dir():
            print(f"\n{name}: no run in {folder} (see this file's docstring for the command that makes it); skipped")
            continue
        print(f"\n{name}: {', '.join(s.name for s in scans)}, {epochs} epochs ({epochs * len(scans)} steps)")
        head = (f"{'option':<40}{'3D':>6}{'+SP':>6}{'3D rBN':>8}{'+SP rBN':>8}{'2D':>6}{'ens':>6}  "
                + "".join(f"{c[:9]:>10}" for c in SMALL) + "  lost")
        print(head)
        for option in args.options:
            out = args.out / name / option.replace(" ", "").replace("+", "_").replace("=", "-").replace("'", "")
            result_file = out / "result.json"
            if result_file.is_file():
                r = json.loads(result_file.read_text())
            else:
                r = run_option(scans, fused, out, epochs, OPTIONS[option])
                result_file.write_text(json.dumps(r, indent=1))
            f, g = r["final"], r["guided"]
            cells = "".join(f"{100 * f['per_class'][c]:>10.1f}" if c in f["per_class"] else f"{'-':>10}" for c in SMALL)
            gone = classes_lost(f["per_class"], g["per_class"])
            running = [f"{100 * r[k]['miou']:>8.1f}" if k in r else f"{'-':>8}" for k in ("final_running", "stage1_running")]
            print(f"{option:<40}{100 * f['miou']:>6.1f}{100 * r['stage1']['miou']:>6.1f}{''.join(running)}{100 * g['miou']:>6.1f}"
                  f"{100 * r['ensemble']['miou']:>6.1f}  {cells}  {', '.join(gone) if gone else 'none'}", flush=True)
        g = r["guided"]["per_class"]
        print(f"{'(guided 2D per class)':<82}" + "".join(f"{100 * g[c]:>10.1f}" if c in g else f"{'-':>10}" for c in SMALL))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
