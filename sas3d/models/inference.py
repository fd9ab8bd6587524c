"""Run the 3D student on one scene and return per-point features."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sas3d.geometry.voxel import batch_coords, voxelize
from sas3d.models.inputs import model_input, voxel_input
from sas3d.models.norm import forward_with_norm_stats


@torch.no_grad()
def predict_point_features(model: torch.nn.Module, points: np.ndarray, voxel_size: float, device: str | torch.device = "cpu",
                           colors: np.ndarray | None = None) -> torch.Tensor:
    """(N, 3) points (+ (N, 3) uint8 ``colors`` for a student trained on RGB) -> (N, C) float32
    unit-length features on the CPU.

    Voxelises the points, feeds the voxel input the student was trained with (constant ones, or the
    voxels' mean colour; see :mod:`sas3d.models.inputs`), copies each voxel's output to its points and
    L2-normalises the rows. The model is put in eval mode and restored to its previous mode
    afterwards; BatchNorm uses the statistics the student's spec names (:mod:`sas3d.models.norm`:
    the running averages, or the scene's own for a student trained one scene per step).
    """
    pts = np.asarray(points, dtype=np.float32)
    vox = voxelize(pts, voxel_size)
    if vox.num_voxels == 0:
        out_dim = int(getattr(model, "out_channels", 0))
        return torch.zeros((0, out_dim), dtype=torch.float32)
    coords = torch.from_numpy(batch_coords([vox.coords])).to(device)
    feats = voxel_input(model_input(model), colors, vox.point_to_voxel, vox.num_voxels).to(device)
    was_training = model.training
    model.eval()
    try:
        out = forward_with_norm_stats(model, feats, coords, 1)
    finally:
        model.train(was_training)
    per_point = out.float()[torch.as_tensor(vox.point_to_voxel, device=out.device)]
    return F.normalize(per_point, dim=1, eps=1e-8).cpu()
