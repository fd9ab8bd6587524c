"""Benchmark: the 3D student on the embedded default scenes: ablation, training speed, costs.

Teachers are SIMULATED (sas3d/configs/teachers_simulated.yaml): the mIoU numbers show the
pipeline and its orderings working, not what real LSeg / SEEM would score.

1. Ablation (``--skip-pipeline`` skips it). Builds the embedded procedural rooms (``--rooms``
   training rooms + 1 held-out room, ``--views`` rendered views each) and runs the whole pipeline
   (``sas3d.pipeline.runner.run_pipeline``, GGSD and the supervised reference included) at the demo
   scale of ``sas3d demo`` (its ``DEMO_*`` constants and in-place student settings; ``--paper-student``
   for the papers'). Prints both splits (in place, held out) and the SAS orderings, each as a ratio
   against the row it must beat in the same run.
2. Training engine speed (``--skip-engine`` skips it). The same SAS training run (demo student, 5 cm,
   batch 2, augmentation on, half the epochs TESD) through ``sas3d train`` of the previous engine
   (commit ``--baseline-commit``, extracted with ``git archive``: one process on one thread, batches
   built in the loop, the TESD history as (N, C) features copied whole at every checkpoint) and of
   this one (one process; then ``engine.procs=2`` gloo ranks with a loader worker each). Each is run
   for 1 and for ``--engine-epochs`` epochs and the per-epoch cost is the difference divided by the
   extra epochs, so start-up (imports, text encoder, scene loading) cancels. The runs train on every
   built room (training and held-out) cut to a multiple of the batch, so both engines train each room
   once per epoch (with a remainder the previous engine's last batch is short and this one's wraps
   around, which would credit the previous engine with voxels it never trained); voxels per epoch
   come from this engine's metrics.csv.
3. Costs (``--skip-costs``): voxels per second of one training step for the demo-width and full-width
   MinkUNet18A at 5 cm and 2 cm; peak memory; inference time per scene against multi-view fusion of
   one teacher over the same views (the per-scene 2D work the student replaces at test time).

The last line printed is ``training speed-up: X.Xx`` (section 2: voxels per second of this engine,
two ranks, over the previous single-thread engine, measured in this run).

    .venv/bin/python benchmarks/distill.py [--rooms 3] [--views 30] [--epochs N] [--width demo|full] [--out runs/bench_distill]
    .venv/bin/python benchmarks/distill.py --skip-pipeline --skip-costs     # engine speed only
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sas3d.commands.demo import (  # noqa: E402
    DEMO_EPOCHS, DEMO_FINAL_LR, DEMO_IMAGES_PER_CLASS, DEMO_LR, DEMO_PLANES, DEMO_VOXEL, INPLACE_OVERRIDES)

WIDTHS = {"demo": {"planes": DEMO_PLANES, "init_dim": DEMO_PLANES[0]}, "full": {}}  # full = MinkUNet18A defaults
PAPER_VOXEL = 0.02  # SAS / OpenScene indoor
BASELINE_COMMIT = "9a54bf5"  # the last commit of the previous (single-thread) training engine


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _text_dim(spec: str) -> int:
    from sas3d.text.encoders import build_text_encoder

    return int(build_text_encoder(spec).dim)


# ----------------------------------------------------------------------------------------------
# Workers (one measurement per subprocess)


def worker_train(scene_dir: str, width: str, voxel: float, steps: int, dim: int, device: str, batch: int = 1) -> dict:
    """Time ``steps`` training steps (after one warm-up step) on ``batch`` copies of one room in one batch."""
    import torch

    from sas3d import load_scene
    from sas3d.distill.losses import cosine_loss
    from sas3d.geometry.voxel import batch_coords, voxelize
    from sas3d.models.registry import build_model
    from sas3d.models.spconv_compat import ensure_spconv_cpu_backward

    ensure_spconv_cpu_backward()
    torch.set_num_threads(1)  # as the trainer (engine.threads=1)
    points = load_scene(scene_dir, labels=False).points
    vox = voxelize(points, voxel)
    coords = torch.from_numpy(batch_coords([vox.coords] * batch)).to(device)
    feats = torch.ones((len(coords), 1), device=device)
    gen = torch.Generator().manual_seed(0)
    target = torch.nn.functional.normalize(torch.randn(len(coords), dim, generator=gen), dim=1).to(device)
    rss0 = _rss_mb()
    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=dim, **WIDTHS[width]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        loss = cosine_loss(model(feats, coords, batch), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step (allocations, spconv rule caches) is a warm-up
            times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    return {"voxels": len(coords), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "s_per_step": sec, "voxels_per_s": len(coords) / sec,
            "peak_rss_growth_mb": _peak_rss_mb() - rss0,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}


def worker_infer(scene_dir: str, width: str, voxel: float, repeats: int, dim: int, device: str) -> dict:
    """Time ``predict_point_features`` on the whole scene (best of ``repeats`` after a warm-up)."""
    import torch

    from sas3d import load_scene
    from sas3d.geometry.voxel import voxelize
    from sas3d.models.inference import predict_point_features
    from sas3d.models.registry import build_model

    points = load_scene(scene_dir, labels=False).points
    t = time.perf_counter()
    vox = voxelize(points, voxel)
    voxelize_s = time.perf_counter() - t
    rss0 = _rss_mb()
    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=dim, **WIDTHS[width]).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = predict_point_features(model, points, voxel, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    assert out.shape == (len(points), dim)
    return {"points": len(points), "voxels": vox.num_voxels, "voxelize_ms": 1000 * voxelize_s,
            "ms": 1000 * min(times), "peak_rss_growth_mb": _peak_rss_mb() - rss0,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}


def worker_fuse(scene_dir: str, dim: int, repeats: int) -> dict:
    """Reference: fuse pre-generated random ``dim``-channel maps over all views of the scene (CPU)."""
    from sas3d import load_scene
    from sas3d.fusion.multiview import fuse_maps

    scene = load_scene(scene_dir, labels=False)
    frames = scene.frames
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal((frames[0].height, frames[0].width, dim), dtype=np.float32) for _ in range(2)]
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        pf = fuse_maps(scene, ((f, pool[k % 2]) for k, f in enumerate(frames)), progress=False, total=len(frames))
        if i:
            times.append(time.perf_counter() - t)
    return {"points": len(scene.points), "views": len(frames), "seen": float(np.asarray(pf.seen, dtype=np.float64).mean()), "ms": 1000 * min(times)}


WORKERS = {"train": worker_train, "infer": worker_infer, "fuse": worker_fuse}


def run_worker(kind: str, **kw) -> dict | None:
    """Run one measurement in a fresh subprocess; returns its JSON result (None on failure)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps({"kind": kind, **kw})]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  ({kind} {kw} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Main benchmark


def ablation(args: argparse.Namespace, data: dict) -> None:
    from sas3d.pipeline.config import PipelineConfig
    from sas3d.pipeline.report import format_ratios, format_tables, write_report
    from sas3d.pipeline.runner import run_pipeline

    cfg = PipelineConfig(
        images_per_class=args.images_per_class, epochs=args.epochs, voxel_size=args.voxel, lr=DEMO_LR,
        final_lr=DEMO_FINAL_LR, batch_size=1, model_options=WIDTHS[args.width], ggsd=True, augment=False,
        train_overrides=[] if args.paper_student else list(INPLACE_OVERRIDES),
        supervised_reference=True, parallel_runs=1 if args.device == "cuda" else (os.cpu_count() or 1), seed=args.seed,
        device=args.device, progress=not args.no_progress)
    start = time.perf_counter()
    report = run_pipeline(data["train"], data["val"], args.out, cfg, log=lambda s: print(s, flush=True))
    elapsed = time.perf_counter() - start
    title = (f"benchmarks/distill.py: {len(data['train'])} embedded training rooms, held-out room "
             f"{data['val'][0].name}, {args.epochs} epochs, {args.width}-width student at {args.voxel * 100:.0f} cm (SIMULATED teachers)")
    _, _, summary = write_report(report, args.out, title, {"wall_clock_s": round(elapsed, 1)})
    print()
    print(format_tables(summary, title))
    for split in summary["splits"]:
        miou = {k: v["miou"] for k, v in summary["splits"][split]["stages"].items()}
        best_teacher = max((k for k in miou if k.startswith("teacher:")), key=miou.get)
        # (name, numerator row, denominator row): each SAS step against the row it must beat
        comparisons = [
            (f"guided 2D / best single teacher ({best_teacher})", "fusion:guided", best_teacher),
            ("guided 2D / add 2D", "fusion:guided", "fusion:add"),
            ("guided 2D / linear 2D", "fusion:guided", "fusion:linear"),
            ("+superpoint / pixel-point", "distill:superpoint", "distill:pixel_point"),
            ("+TESD / +superpoint", "distill:tesd", "distill:superpoint"),
            ("+TESD / guided 2D (student vs its fused teacher)", "distill:tesd", "fusion:guided"),
            ("+TESD / GGSD", "distill:tesd", "distill:ggsd"),
            ("2D-3D ensemble / +TESD", "distill:ensemble", "distill:tesd"),
            # not an ordering SAS claims: the same student on ground-truth labels, at this budget
            ("+TESD / supervised reference", "distill:tesd", "distill:supervised"),
        ]
        print("\n" + format_ratios(summary, split, comparisons))
    print("\nwall-clock per stage (s):")
    for name, sec in report.timings.items():
        print(f"  {name:<45}{sec:8.1f}")
    print(f"  {'total':<45}{elapsed:8.1f}")


# ----------------------------------------------------------------------------------------------
# Training engine speed: the previous engine (git) against this one, same run, same data


def _baseline_source(commit: str, into: Path) -> Path | None:
    """The sas3d package of ``commit`` (git archive), or None when there is no git history here."""
    target = into / f"sas3d-{commit}"
    if (target / "sas3d" / "__init__.py").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "sas3d"], capture_output=True)
    if archive.returncode != 0:
        print(f"  (git archive {commit} failed: {archive.stderr.decode().strip()}; no baseline engine)")
        shutil.rmtree(target, ignore_errors=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _timed_train(source: Path, scenes: list[Path], fused: Path, out: Path, epochs: int, overrides: list[str]) -> float:
    """Wall-clock seconds of one `sas3d train` run of the package in ``source`` (fresh run folder)."""
    shutil.rmtree(out, ignore_errors=True)
    # absolute paths: the run's working directory is ``source`` (the baseline's package lives there)
    scenes, fused, out = [s.resolve() for s in scenes], fused.resolve(), out.resolve()
    cmd = [sys.executable, "-m", "sas3d", "train", "--recipe", "sas", "--scenes", ",".join(map(str, scenes)), "--fused", str(fused),
           "--out", str(out), "--epochs", str(epochs)]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(source), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


ENGINE_BATCH = 2  # global batch of the engine comparison


def previous_engine_passes(num_scenes: int, world: int) -> int:
    """Scene-passes per epoch of the previous engine (commit 9a54bf5): each rank pads its share to
    ceil(n / W) scenes and walks it in chunks of B / W, the last chunk holding what is left (so each
    padded scene is trained once, whatever B)."""
    return math.ceil(num_scenes / world) * world


def this_engine_passes(num_scenes: int, batch: int) -> int:
    """Scene-passes per epoch of this engine (:class:`sas3d.distill.batching.EpochPlan`): ceil(n / B)
    full global batches, the last one wrapped around the epoch's order."""
    return math.ceil(num_scenes / batch) * batch


def engine_scenes(rooms: list[Path], batch: int) -> list[Path]:
    """The rooms of the engine comparison: ``rooms`` cut to a multiple of ``batch``, so that the previous
    engine (one process) and this one train the same scene-passes per epoch."""
    scenes = rooms[: len(rooms) - len(rooms) % batch]
    if not scenes:
        raise SystemExit(f"the engine comparison needs >= {batch} rooms, got {len(rooms)}")
    if previous_engine_passes(len(scenes), 1) != this_engine_passes(len(scenes), batch):
        raise SystemExit(f"the engines would train different scene-passes per epoch on {len(scenes)} rooms")
    return scenes


def engine_speed(args: argparse.Namespace, data: dict) -> float | None:
    """Per-epoch cost of the previous engine and of this one; returns this engine (2 ranks) / previous."""
    from sas3d.cli import main as cli_main

    fused = args.out / "engine" / "fused"
    # Every built room (training + held-out), cut to a multiple of the global batch: the previous
    # engine's last batch of an epoch holds the scenes left over (3 rooms, batch 2: 2 + 1 scene-passes),
    # this engine's wraps around to a full batch (2 + 2), so with a remainder the two would train
    # different amounts per epoch. With none, both train every room once per epoch.
    scenes = engine_scenes(list(data["train"]) + list(data["val"]), ENGINE_BATCH)  # each trained once per epoch
    for scene in scenes:
        target = fused / f"{scene.name}.safetensors"
        if not target.is_file():
            assert cli_main(["fuse", str(scene), "--teacher", "simulated:lseg", "--out", str(target), "--no-progress"]) == 0
    common = ["data.voxel_size=0.05", f"optim.lr={DEMO_LR}", f"optim.final_lr={DEMO_FINAL_LR}", f"optim.batch_size={ENGINE_BATCH}",
              f"model.options={{planes: {DEMO_PLANES}, init_dim: {DEMO_PLANES[0]}}}", "schedule.stage1_fraction=0.5",
              "schedule.keep_checkpoints=1"]
    engines = [("previous engine (1 process, 1 thread)", None, [])]
    engines += [("this engine, 1 process", REPO, ["engine.procs=1"]),
                ("this engine, 2 gloo ranks + loader workers", REPO, ["engine.procs=2"])]
    baseline = _baseline_source(args.baseline_commit, args.out / "engine")
    if baseline is None:
        engines = engines[1:]
    epochs = args.engine_epochs
    print(f"\nTraining engine: SAS recipe on {len(scenes)} generated rooms ({len(scenes)} scene-passes per epoch in both engines), "
          f"demo student at 5 cm, batch {ENGINE_BATCH}, augmentation on, "
          f"{epochs} epochs ({epochs // 2} with TESD); per-epoch cost = (T[{epochs} epochs] - T[1 epoch]) / {epochs - 1}")
    rates = {}
    voxels = None
    for name, source, extra in engines:
        source = source or baseline
        runs = {n: _timed_train(source, scenes, fused, args.out / "engine" / f"run_{len(rates)}_{n}", n, common + extra)
                for n in (1, epochs)}
        per_epoch = (runs[epochs] - runs[1]) / (epochs - 1)
        if source == REPO and voxels is None:
            with open(args.out / "engine" / f"run_{len(rates)}_{epochs}" / "metrics.csv") as fh:
                rows = list(csv.DictReader(fh))
            voxels = sum(int(r["voxels"]) for r in rows[1:]) / max(1, len(rows) - 1)
        rates[name] = per_epoch
        print(f"  {name:<46} {per_epoch:7.2f} s/epoch  (1 epoch {runs[1]:6.1f} s, {epochs} epochs {runs[epochs]:6.1f} s)", flush=True)
    assert voxels is not None
    print(f"  voxels per epoch (this engine's metrics.csv): {voxels:.0f}")
    for name, per_epoch in rates.items():
        print(f"  {name:<46} {voxels / per_epoch:9.0f} voxels/s")
    if baseline is None:
        return None
    return rates[engines[0][0]] / rates[engines[-1][0]]


def big_scene(out: Path, target: int, views: int, seed: int) -> Path:
    """A generated room whose mesh has >= ``target`` vertices, written with rendered views (cached)."""
    from sas3d.demo.rooms import generate_room, write_room

    scene_dir = out / "perf_scene" / f"scene9900_{target}"
    if (scene_dir / "pose").is_dir():
        return scene_dir
    for edge in np.arange(0.05, 0.015, -0.0025):  # finer mesh edges -> more vertices
        room = generate_room(seed + 900, "office", edge=float(edge))
        if len(room.vertices) >= target:
            break
    write_room(room, scene_dir, scene_dir.name, views, 320, 240, seed + 900)
    return scene_dir


def _cuda_mb(result: dict) -> str:
    return f"{result['cuda_peak_mb']:.0f}" if result["cuda_peak_mb"] is not None else "-"


def costs(args: argparse.Namespace, data: dict) -> None:
    import torch

    dim = _text_dim("minilm")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    room = data["train"][0]
    print(f"\nTraining throughput: one step = forward + backward + Adam on every voxel of {room.name} "
          f"(median of {args.steps} steps after a warm-up; CPU on 1 thread, as each rank of the trainer; {dim}-d targets)")
    print(f"  {'model':<12}{'device':<7}{'voxel':>7}{'voxels':>9}{'params M':>9}{'s/step':>9}{'voxels/s':>10}"
          f"{'peak RSS +MB':>13}{'CUDA MB':>9}")
    configurations = list(itertools.product(devices, WIDTHS, (DEMO_VOXEL, PAPER_VOXEL)))
    # batch 12 (the SAS paper's) only where it fits a step in seconds: on a GPU, full width at 2 cm
    batches = [(d, w, v, 1) for d, w, v in configurations] + ([("cuda", "full", PAPER_VOXEL, 12)] if "cuda" in devices else [])
    for device, width, voxel, batch in batches:
        r = run_worker("train", scene_dir=str(room), width=width, voxel=voxel, steps=args.steps, dim=dim, device=device, batch=batch)
        if r:
            print(f"  {width + (f' x{batch}' if batch > 1 else ''):<12}{device:<7}{voxel * 100:>5.0f}cm{r['voxels']:>9}{r['params_m']:>9.2f}"
                  f"{r['s_per_step']:>9.2f}{r['voxels_per_s']:>10.0f}{r['peak_rss_growth_mb']:>13.0f}{_cuda_mb(r):>9}", flush=True)

    scene = big_scene(args.out, args.infer_points, args.views, args.seed)
    ref = run_worker("fuse", scene_dir=str(scene), dim=dim, repeats=args.repeats)
    print(f"\nInference per scene: generated room {scene.name}"
          + (f", {ref['points']} points, {ref['views']} views 320x240" if ref else ""))
    if ref:
        print(f"  reference: multi-view fusion of one {dim}-d teacher over all views (fuse_maps, CPU, maps "
              f"pre-generated, teacher inference not counted): {ref['ms']:.0f} ms")
    print(f"  {'model':<12}{'device':<7}{'voxel':>7}{'voxels':>9}{'voxelise ms':>12}{'ms/scene':>10}{'/ fusion':>9}"
          f"{'peak RSS +MB':>13}{'CUDA MB':>9}")
    for device, width, voxel in configurations:
        r = run_worker("infer", scene_dir=str(scene), width=width, voxel=voxel, repeats=args.repeats, dim=dim, device=device)
        if r:
            ratio = f"{r['ms'] / ref['ms']:.2f}x" if ref else "n/a"
            print(f"  {width:<12}{device:<7}{voxel * 100:>5.0f}cm{r['voxels']:>9}{r['voxelize_ms']:>12.0f}"
                  f"{r['ms']:>10.0f}{ratio:>9}{r['peak_rss_growth_mb']:>13.0f}{_cuda_mb(r):>9}", flush=True)
    if not torch.cuda.is_available():
        print("  (no CUDA device: CPU only)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=3, help="embedded training rooms (default 3)")
    parser.add_argument("--width", choices=sorted(WIDTHS), default="demo",
                        help="student of the ablation: the demo's quarter-width MinkUNet18A or the full one (default demo)")
    parser.add_argument("--views", type=int, default=30, help="rendered views per room (default 30)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"distillation epochs (default {DEMO_EPOCHS}, as sas3d demo)")
    parser.add_argument("--images-per-class", type=int, default=DEMO_IMAGES_PER_CLASS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_distill"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="timed inference / fusion repeats (default 2)")
    parser.add_argument("--infer-points", type=int, default=150_000, help="points of the inference scene (default 150000)")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the ablation")
    parser.add_argument("--skip-costs", action="store_true", help="skip the throughput / memory / inference figures")
    parser.add_argument("--skip-engine", action="store_true", help="skip the training-engine speed comparison")
    parser.add_argument("--engine-epochs", type=int, default=8, help="epochs of the long engine runs (default 8)")
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT, help=f"previous engine (default {BASELINE_COMMIT})")
    parser.add_argument("--paper-student", action="store_true", help="ablation with the papers' student settings")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the ablation's training runs")
    parser.add_argument("--voxel", type=float, default=DEMO_VOXEL, help=f"voxel size of the ablation (default {DEMO_VOXEL}; paper 0.02)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec.pop("kind")](**spec)))
        return 0
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    from sas3d.demo.rooms import build_embedded_dataset

    print("benchmarks/distill.py: 2D teachers are SIMULATED from ground-truth renders (not real LSeg/SEEM results)")
    data = build_embedded_dataset(args.out / "data", n_train=args.rooms, n_val=1, n_views=args.views, seed=args.seed,
                                  progress=not args.no_progress)
    if not args.skip_pipeline:
        ablation(args, data)
    if not args.skip_costs:
        costs(args, data)
    speedup = None if args.skip_engine else engine_speed(args, data)
    print(f"\npeak RSS of the main process: {_peak_rss_mb():.0f} MB (SIMULATED teachers)")
    if speedup is not None:
        print(f"training speed-up: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
