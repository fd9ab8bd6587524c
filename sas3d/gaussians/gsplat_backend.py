"""Optional CUDA rasteriser: gsplat's ``rasterization`` (imported lazily; ``pip install gsplat``).

UNTESTED IN THIS PROJECT: no CUDA device was available where sas3d is developed, so this path is
written against gsplat's documented API (``gsplat.rasterization``, v1.x) but has never been run.
The CPU rasteriser (:mod:`sas3d.gaussians.raster`) is the tested reference. Differences to keep in
mind: gsplat samples pixel (i, j) at (i + 0.5, j + 0.5), so the principal point is shifted by half
a pixel to keep sas3d's "integer coordinates are pixel centres" convention; gsplat evaluates every
Gaussian inside its tile rect (no 3-sigma ellipse cutoff) and returns the expected depth (not the
median) as the third output here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sas3d.errors import ConfigError
from sas3d.geometry.projection import world_to_camera


def require_gsplat() -> Any:
    """Import gsplat and check CUDA, or raise ConfigError saying what is missing."""
    try:
        import gsplat
    except ImportError:
        raise ConfigError("--backend gsplat needs the gsplat package (pip install gsplat) and a CUDA GPU") from None
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--backend gsplat needs a CUDA GPU; torch sees none (use --backend cpu)")
    return gsplat


def render_gsplat(gaussians: Any, camera: Any, values: np.ndarray, device: str = "cuda") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same contract as :func:`sas3d.gaussians.raster.render`: (image (H, W, C), transmittance, depth)."""
    gsplat = require_gsplat()
    import torch

    def t(x: Any, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    k = np.asarray(camera.intrinsics, dtype=np.float64).copy()
    k[0, 2] += 0.5  # gsplat pixel centres are at +0.5
    k[1, 2] += 0.5
    viewmat = world_to_camera(camera)
    colors = t(values)
    with torch.no_grad():
        image, alpha, _ = gsplat.rasterization(
            means=t(gaussians.means), quats=t(gaussians.rotations), scales=t(gaussians.scales),
            opacities=t(gaussians.opacities), colors=colors, viewmats=t(viewmat)[None], Ks=t(k)[None],
            width=int(camera.width), height=int(camera.height), near_plane=0.05, render_mode="RGB+ED")
    out = image[0].float().cpu().numpy()
    return out[..., :-1], 1.0 - alpha[0, ..., 0].float().cpu().numpy(), out[..., -1]
