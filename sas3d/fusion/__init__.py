"""Multi-view 2D->3D fusion and capability-guided fusion of several teachers."""

from sas3d.fusion.features import PointFeatures

__all__ = ["PointFeatures"]
