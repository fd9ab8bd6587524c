"""The pipeline's training runs: which students it trains, with which settings, side by side."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from sas3d.pipeline.config import PipelineConfig


def training_overrides(cfg: PipelineConfig) -> list[str]:
    """The ``--set`` values every training run of the pipeline adds to its recipe."""
    common = [f"data.voxel_size={cfg.voxel_size}", f"optim.lr={cfg.lr}", f"optim.final_lr={cfg.final_lr}",
              f"optim.batch_size={cfg.batch_size}", f"seed={cfg.seed}", f"schedule.keep_checkpoints={cfg.keep_checkpoints}",
              f"schedule.checkpoint_every={cfg.checkpoint_every}", f"data.augment={str(cfg.augment).lower()}", f"device={cfg.device}",
              f"text.encoder={cfg.text_encoder}", f"text.labelset={cfg.labelset}"]  # the students' text space = the pipeline's
    common += [f"model.options.{k}={json.dumps(v)}" for k, v in cfg.model_options.items()]  # JSON is valid YAML
    return common + list(cfg.train_overrides)


def train_students(cfg: PipelineConfig, train_dirs: Sequence[Path], fused_dir: Path, runs_dir: Path, timings: dict[str, float],
                   log: Callable[[str], None]) -> dict[str, Path]:
    """Train the students; returns checkpoint paths keyed by ablation row.

    "+ superpoint" is the SAS run's checkpoint at the end of stage 1 (SAS trains progressively), and
    the pixel-point baseline trains the same number of epochs so the two rows compare like with like.
    The runs are independent, so with ``cfg.parallel_runs > 1`` they train side by side in worker
    processes, each a single-process, single-thread run. The workers are spawned, so a script that
    calls this must keep its top-level work under ``if __name__ == "__main__":``.
    """
    from sas3d.distill.config import load_train_config

    common = training_overrides(cfg)
    stage1 = load_train_config("sas", common, epochs=cfg.epochs).stage1_epochs
    plans = [("pixel_point", "openscene", stage1), ("tesd", "sas", cfg.epochs)]
    if cfg.ggsd:
        plans.append(("ggsd", "ggsd", cfg.epochs))
    if cfg.supervised_reference:
        plans.append(("supervised", "supervised", cfg.epochs))  # the longest distillation budget
    plans.sort(key=lambda plan: -plan[2])  # longest first: the best packing onto the workers
    workers = max(1, min(cfg.parallel_runs, len(plans)))
    # one core per run when runs go side by side; a lone run may use the whole machine
    engine = ["engine.procs=1", "engine.loader_workers=0", "engine.threads=1"] if workers > 1 else []
    jobs = [(recipe, common + engine, epochs, stage1, [str(d) for d in train_dirs], str(fused_dir), str(runs_dir / recipe))
            for _, recipe, epochs in plans]
    for _, recipe, epochs in plans:
        log(f"== distill: {recipe} recipe ({epochs} epochs)")
    if workers == 1:
        results = [train_run(*job) for job in jobs]
    else:
        results = train_in_workers(cfg, jobs, workers, [(runs_dir / recipe / "metrics.csv", epochs) for _, recipe, epochs in plans])
    runs: dict[str, Path] = {}
    for (key, recipe, epochs), (checkpoints, seconds) in zip(plans, results):
        timings[f"distill: {recipe} recipe ({epochs} epochs)"] = seconds
        runs.update({"superpoint" if name == "stage1" else key: Path(path) for name, path in checkpoints.items()})
    order = ["pixel_point", "superpoint", "tesd", "ggsd", "supervised"]
    return {k: runs[k] for k in order if k in runs}


def train_in_workers(cfg: PipelineConfig, jobs: list[tuple], workers: int, logs: list[tuple[Path, int]]) -> list[tuple[dict[str, str], float]]:
    """Run ``train_run(*job)`` for every job in ``workers`` spawned processes, with one progress bar over the
    epochs each run's metrics.csv (``logs``: (path, epochs)) records; returns their results in job order."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor
    from unittest.mock import patch  # sets, then restores, an environment variable

    from tqdm import tqdm

    # spawn: a forked child would inherit torch's and numba's thread pools mid-state. The workers
    # draw no bars of their own (they inherit TQDM_DISABLE when submit() starts them, before anything
    # imports tqdm there); one bar here counts the epochs their metrics.csv log.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        with patch.dict(os.environ, {"TQDM_DISABLE": "1"}):
            futures = [pool.submit(train_run, *job) for job in jobs]
        with tqdm(total=sum(e for _, e in logs), desc=f"training {len(jobs)} students, {workers} at a time", unit="epoch",
                  disable=not cfg.progress) as bar:
            while not all(f.done() for f in futures):
                time.sleep(1.0)
                bar.update(sum(_logged_epochs(f) for f, _ in logs) - bar.n)
            bar.update(sum(_logged_epochs(f) for f, _ in logs) - bar.n)
        return [f.result() for f in futures]


def _logged_epochs(metrics_csv: Path) -> int:
    try:
        return max(0, len(metrics_csv.read_text().splitlines()) - 1)  # minus the header
    except OSError:
        return 0


def train_run(recipe: str, common: list[str], epochs: int, stage1: int, train_dirs: list[str], fused_dir: str,
              run_dir: str) -> tuple[dict[str, str], float]:
    """One training run (a top-level function, so worker processes can run it); reuses a finished or
    interrupted run in ``run_dir``. Returns ({"last": checkpoint[, "stage1": checkpoint]}, seconds)."""
    from sas3d.distill.config import load_train_config
    from sas3d.distill.trainer import train

    start = time.perf_counter()
    out = Path(run_dir)
    tcfg = load_train_config(recipe, common, epochs=epochs)
    last = out / "last.safetensors"
    checkpoints = {}
    if recipe == "sas":
        # Pause at the end of stage 1 to keep that student ("+ superpoint"), then resume into TESD.
        stage1_ckpt = out / "stage1.safetensors"
        if not stage1_ckpt.is_file():
            train(tcfg, train_dirs, fused_dir, out, resume=last.is_file(), stop_after=stage1)
            shutil.copyfile(last, stage1_ckpt)
        checkpoints["stage1"] = str(stage1_ckpt)
    train(tcfg, train_dirs, fused_dir, out, resume=last.is_file())
    checkpoints["last"] = str(last)
    return checkpoints, time.perf_counter() - start
