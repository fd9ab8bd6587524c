"""2D teachers: images -> dense per-pixel features in the shared text space."""

from sas3d.teachers.base import Teacher

__all__ = ["Teacher"]
