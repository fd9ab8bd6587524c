"""Geometry: projection of points into frames, voxelisation, superpoints."""
