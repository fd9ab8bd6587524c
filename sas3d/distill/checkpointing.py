"""Run folder of a training run: checkpoints, ``last.safetensors``, ``metrics.csv``, and resuming.

Layout (``out_dir``)::

    config.yaml                         resolved TrainConfig
    checkpoints/epoch_XXXX.safetensors  every schedule.checkpoint_every epochs (model, Adam state, EMA teacher, RNG, metadata)
    last.safetensors                    copy of the newest checkpoint (what --resume reads)
    metrics.csv                         one row per epoch: stage, lr, losses, validation mIoU/mAcc, seconds, voxels trained
    tb/                                 TensorBoard scalars
    tesd/                               TESD history files (sas3d.distill.history)

Only rank 0 writes; every rank reads on resume. Resuming needs the same config, except the fields
that change speed, not results (``device``, ``engine``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from sas3d.config import from_dict, to_dict
from sas3d.distill.config import TrainConfig
from sas3d.errors import ConfigError
from sas3d.utils.atomic import atomic_path, write_text_atomic

METRIC_FIELDS = ["epoch", "stage", "lr", "loss", "loss_point", "loss_superpoint", "loss_self", "loss_labels", "loss_target_ce", "val_miou", "val_macc",
                 "seconds", "voxels", "cuda_peak_mb"]
RESUMABLE_CHANGES = ("device", "engine")  # config sections that may differ between a run and its resumption


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_metrics(out_dir: Path, metrics: list[dict[str, Any]]) -> None:
    lines = [",".join(METRIC_FIELDS)] + [",".join(_fmt(row.get(k)) for k in METRIC_FIELDS) for row in metrics]
    write_text_atomic(out_dir / "metrics.csv", "\n".join(lines) + "\n")


def save_run_checkpoint(out_dir: Path, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        metadata: dict[str, Any], extra: dict[str, torch.Tensor], epoch: int) -> Path:
    """Write ``checkpoints/epoch_XXXX`` and ``last`` atomically, prune old ones, write metrics.csv."""
    from sas3d.models.checkpoint import save_checkpoint

    path = out_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors"
    meta = {"kind": "sas3d-train-checkpoint", "config": to_dict(cfg), "epoch": epoch, **metadata}
    save_checkpoint(path, model, meta, optimizer=optimizer, extra={"rng.torch": torch.get_rng_state(), **extra})
    with atomic_path(out_dir / "last.safetensors") as tmp:
        shutil.copyfile(path, tmp)
    keep = cfg.schedule.keep_checkpoints
    if keep > 0:
        for old in sorted(path.parent.glob("epoch_*.safetensors"))[:-keep]:
            old.unlink()
    write_metrics(out_dir, metadata.get("metrics", []))
    return path


def load_run_checkpoint(out_dir: Path, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Restore model, optimizer and torch RNG from ``last.safetensors``; returns (metadata, extra
    tensors), or None when the run has no checkpoint yet. ConfigError if the config differs."""
    from sas3d.models.checkpoint import load_checkpoint, load_optimizer_state

    path = out_dir / "last.safetensors"
    if not path.is_file():
        return None
    loaded, meta, state = load_checkpoint(path)
    saved = meta.get("config", {})
    try:  # fields added to TrainConfig after the run started take their defaults
        saved = to_dict(from_dict(TrainConfig, saved))
    except ConfigError:
        pass  # a field this version no longer has: the comparison below names the section
    mine = to_dict(cfg)
    diff = sorted(k for k in set(saved) | set(mine) if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k))
    if diff:
        raise ConfigError(f"{path}: the run was started with a different config (sections {diff}); resume with the same recipe and --set values")
    model.load_state_dict(loaded.state_dict())
    load_optimizer_state(optimizer, state)
    if "rng.torch" in state.extra:
        torch.set_rng_state(state.extra["rng.torch"].cpu().to(torch.uint8))
    return meta, state.extra
