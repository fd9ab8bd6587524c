"""Benchmark: the TESD history (SAS Sec. 3.4) at ScanNet scale: memory flat in the number of scenes.

A synthetic history of ``--scenes`` scenes x ``--points`` points x ``--classes`` class scores (ScanNet:
1,201 training scans of ~150k points, 20 classes) goes through what training does to it: one
epoch-update (every scene updated once, as one epoch of stage 2 does), a checkpoint (commit), a
second epoch-update, a kill and a restore to the checkpoint. Each phase runs in its own subprocess so
its peak RSS is its own; the same phases for fewer scenes show that memory does not grow with them.

Reference, computed not run: the previous layout kept H as (N, C) features (C = 384 for MiniLM,
768 for CLIP) and copied all of it at every checkpoint.

    .venv/bin/python benchmarks/tesd_history.py [--scenes 1201] [--points 150000] [--classes 20] [--out runs/bench_tesd]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(root: str, scenes: int, points: int, classes: int, phase: str) -> dict:
    """One phase over every scene: 'first' (update 1), 'second' (update 2 after a commit of update 1)."""
    import numpy as np
    import torch

    from sas3d.distill.history import TESDHistory

    names = [f"scene{i:04d}_00" for i in range(scenes)]
    hist = TESDHistory(root, alpha=0.9999)
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.standard_normal((points, classes), dtype=np.float32))  # one step's prediction scores
    rss0 = _peak_rss_mb()
    start = time.perf_counter()
    if phase == "first":
        for n in names:
            hist.update(n, 0, scores)
        hist.commit({n: 1 for n in names})
    elif phase == "second":
        hist.restore({n: 1 for n in names}, names)  # as a resumed run: the checkpoint pins update 1
        for n in names:
            hist.update(n, 1, scores)
    elif phase == "restore":  # a run killed after the second epoch-update resumes from the checkpoint
        hist.restore({n: 1 for n in names}, names)
    seconds = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in Path(root).iterdir()) / 2**30
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": rss0, "disk_gib": disk,
            "files": len(list(Path(root).iterdir()))}


def run(root: Path, scenes: int, points: int, classes: int, phase: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps([str(root), scenes, points, classes, phase])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=1201)
    parser.add_argument("--points", type=int, default=150_000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tesd"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    per_scene_mib = args.points * args.classes * 4 / 2**20
    print(f"benchmarks/tesd_history.py: {args.points} points x {args.classes} class scores per scene "
          f"({per_scene_mib:.1f} MiB float32 per scene and version)")
    print(f"{'scenes':>7} {'phase':<34}{'seconds':>9}{'s/scene':>9}{'peak RSS MB':>12}{'disk GiB':>10}{'files':>7}")
    counts = sorted({max(1, args.scenes // 12), max(1, args.scenes // 3), args.scenes})
    peaks = {}
    for n in counts:
        root = args.out / f"h{n}"
        shutil.rmtree(root, ignore_errors=True)
        for phase, label in (("first", "epoch-update 1 + checkpoint"), ("second", "epoch-update 2 (checkpoint kept)"),
                             ("restore", "kill + restore to the checkpoint")):
            r = run(root, n, args.points, args.classes, phase)
            peaks.setdefault(n, []).append(r["peak_rss_mb"])
            print(f"{n:>7} {label:<34}{r['seconds']:>9.1f}{r['seconds'] / n:>9.3f}{r['peak_rss_mb']:>12.0f}{r['disk_gib']:>10.2f}"
                  f"{r['files']:>7}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    lo, hi = counts[0], counts[-1]
    print(f"\npeak RSS, {hi} scenes / {lo} scenes: {max(peaks[hi]) / max(peaks[lo]):.2f}x for {hi / lo:.0f}x the scenes")
    for dim in (384, 768):
        print(f"previous layout, (N, {dim}) features: {args.scenes * args.points * dim * 4 / 2**30:.0f} GiB per copy, "
              f"copied whole at every checkpoint (computed, not run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
