"""3D Gaussian segmentation (SAS Table 5): read 3DGS scenes, lift teacher features onto the Gaussians,
fuse them as for points, distil a 3D network on the Gaussian centres, render and score semantic views.

Data flows as in the point pipeline: Gaussian scene + posed views -> per-teacher lifted features
(:class:`sas3d.fusion.features.PointFeatures`, one row per Gaussian) -> add / guided fusion
(:mod:`sas3d.fusion.guided`, unchanged) -> 3D student -> alpha-composited label maps.
"""

from sas3d.gaussians.model import SH_C0, GaussianScene
from sas3d.gaussians.ply import read_gaussian_ply, write_gaussian_ply

__all__ = ["SH_C0", "GaussianScene", "read_gaussian_ply", "write_gaussian_ply"]
