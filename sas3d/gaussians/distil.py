"""Distil a 3D network on the Gaussians (Semantic Gaussians / SAS Tab. 5) with the existing trainer.

The trainer reads scenes with ``sas3d.load_scene`` and fused features from
``<fused_dir>/<scene.name>.safetensors``. A Gaussian scene is presented to it as what it is to the
3D network, a point cloud of the Gaussian centres: :func:`prepare_training_inputs` writes
``<work>/<name>.ply`` (centres + DC colour, no labels: zero-shot) and the lifted/fused features as
``<work>/<name>.safetensors``, so ``train(cfg, [<work>/<name>.ply], <work>, run_dir)`` needs no
Gaussian-specific code. SAS re-distils on the Gaussians without its Sec. 3.4 superpoint / TESD
strategy, i.e. with the pixel-point (``openscene``) recipe, the default here.

The student sees the centres, and their DC colour when trained with ``data.input=rgb`` (the centres
PLY carries it; :func:`student_features` feeds it at inference). Every student call goes through
:func:`student_features`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sas3d.fusion.features import PointFeatures
from sas3d.gaussians.lift import check_features_match
from sas3d.gaussians.model import GaussianScene

DEFAULT_RECIPE = "openscene"  # SAS Tab. 5: re-distilled without the Sec. 3.4 strategy


def prepare_training_inputs(gaussians: GaussianScene, features: PointFeatures, work_dir: str | Path) -> Path:
    """Write the centres scene and its features under ``work_dir``; returns the scene PLY path."""
    from sas3d.scene.ply import write_ply

    check_features_match(features, gaussians)
    work = Path(work_dir)
    scene_path = work / f"{gaussians.name}.ply"
    write_ply(scene_path, gaussians.means, gaussians.colors_uint8,
              comment=f"centres of Gaussian scene {gaussians.name} ({gaussians.fingerprint()})")
    meta = dict(features.metadata)
    meta["scene"] = gaussians.name
    meta["gaussians"] = gaussians.identity()
    PointFeatures(features.features, features.seen, meta, features.weights).save(work / f"{gaussians.name}.safetensors")
    return scene_path


def distil_gaussians(gaussians: GaussianScene, features: PointFeatures, out_dir: str | Path, *,
                     recipe: str = DEFAULT_RECIPE, overrides: Sequence[str] = (), epochs: int | None = None,
                     resume: bool = False) -> Path:
    """Train the 3D student on the Gaussian centres; returns ``<out_dir>/last.safetensors``."""
    from sas3d.distill.config import load_train_config
    from sas3d.distill.trainer import train

    out = Path(out_dir)
    work = out / "inputs"
    if work.exists() and not resume:
        shutil.rmtree(work)
    scene_path = prepare_training_inputs(gaussians, features, work)
    cfg = load_train_config(recipe, list(overrides), epochs=epochs)
    train(cfg, [scene_path], work, out, resume=resume and (out / "last.safetensors").is_file())
    return out / "last.safetensors"


def student_features(model: torch.nn.Module, gaussians: GaussianScene, voxel_size: float,
                     device: str = "cpu") -> torch.Tensor:
    """(N, C) unit features the 3D student predicts for every Gaussian (from its centre)."""
    from sas3d.models.inference import predict_point_features

    return predict_point_features(model, np.asarray(gaussians.means, np.float32), voxel_size, device=device,
                                  colors=gaussians.colors_uint8)


def checkpoint_features(path: str | Path, gaussians: GaussianScene, device: str = "cpu") -> PointFeatures:
    """Per-Gaussian features of a trained checkpoint (every Gaussian has one), as PointFeatures."""
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.query.similarity import DEFAULT_VOXEL_SIZE, metadata_value

    model, meta, _ = load_checkpoint(path, device=device)
    voxel = float(metadata_value(meta, "voxel_size") or DEFAULT_VOXEL_SIZE)
    feats = student_features(model, gaussians, voxel, device)
    seen = torch.ones(gaussians.num_gaussians, dtype=torch.bool)
    return PointFeatures(feats, seen, {"source": str(path), "kind": "distill", "voxel_size": voxel,
                                       "scene": gaussians.name, "gaussians": gaussians.identity()})
