"""Scene I/O: the Scene/Frame boundary types and the readers for each dataset layout."""

from sas3d.scene.types import Frame, Scene

__all__ = ["Frame", "Scene"]
