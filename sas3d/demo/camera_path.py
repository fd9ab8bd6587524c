"""Handheld-like camera paths inside an indoor mesh (generated room or real scan).

The free floor area is found from the mesh itself: a 2-D grid over the floor, where a cell is
"floor" if it has vertices near the floor height and "blocked" if it has vertices between knee and
head height (walls, furniture). Cameras walk a loop around the centre of the free area at head
height, each looking across the room (towards the opposite walls) with some pitch down, plus
small jitter in position, yaw, pitch and roll, as a person scanning a room with a phone would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class CameraPathConfig:
    height: tuple[float, float] = (1.3, 1.6)  # camera height above the floor, metres (handheld)
    pitch_deg: tuple[float, float] = (15.0, 25.0)  # look down angle
    yaw_jitter_deg: float = 20.0  # deviation from looking straight across the room centre
    roll_deg: float = 2.0  # handheld roll (std)
    cell: float = 0.1  # floor grid cell, metres
    wall_margin: float = 0.35  # keep this far from anything blocked (walls, furniture)
    radius_fraction: float = 0.65  # walk at this fraction of the free distance from the centre
    loops: float = 1.0  # how many times the path circles the room


def look_pose(position: np.ndarray, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """4x4 camera-to-world pose (OpenCV axes) at ``position`` looking along ``yaw`` (radians, from +x
    towards +y) tilted down by ``pitch``, with optional ``roll`` about the viewing axis; world z is up."""
    fwd = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, position
    return pose


@dataclass
class FloorPlan:
    """Free-space grid of a mesh: ``free`` (nx, ny) bool cells of size ``cell`` from ``origin`` (x, y)."""

    origin: np.ndarray
    cell: float
    free: np.ndarray
    floor_z: float
    top_z: float

    def cell_center(self, ij: np.ndarray) -> np.ndarray:
        return self.origin + (np.asarray(ij, dtype=np.float64) + 0.5) * self.cell

    def is_free(self, xy: np.ndarray) -> bool:
        i, j = np.floor((np.asarray(xy) - self.origin) / self.cell).astype(int)
        return 0 <= i < self.free.shape[0] and 0 <= j < self.free.shape[1] and bool(self.free[i, j])


def floor_plan(vertices: np.ndarray, cfg: CameraPathConfig | None = None) -> FloorPlan:
    """Free floor cells of an indoor mesh (z up): floor present, nothing from 0.15 m to 2 m above it,
    eroded by ``wall_margin``. Falls back to less erosion when a small room leaves nothing free."""
    from scipy import ndimage

    cfg = cfg or CameraPathConfig()
    v = np.asarray(vertices, dtype=np.float64)
    floor_z = float(np.percentile(v[:, 2], 1.0))
    top_z = float(np.percentile(v[:, 2], 99.5))
    origin = v[:, :2].min(axis=0)
    shape = tuple(np.floor((v[:, :2].max(axis=0) - origin) / cfg.cell).astype(int) + 1)
    ij = np.minimum(np.floor((v[:, :2] - origin) / cfg.cell).astype(int), np.array(shape) - 1)
    rel = v[:, 2] - floor_z
    floor = np.zeros(shape, bool)
    blocked = np.zeros(shape, bool)
    floor[ij[rel < 0.08, 0], ij[rel < 0.08, 1]] = True
    body = (rel > 0.15) & (rel < 2.0)
    blocked[ij[body, 0], ij[body, 1]] = True
    floor = ndimage.binary_closing(floor, iterations=2) & ~blocked  # close small holes in a scanned floor
    for margin in (cfg.wall_margin, cfg.wall_margin / 2, 0.0):
        steps = int(round(margin / cfg.cell))
        free = ndimage.binary_erosion(floor, iterations=steps, border_value=0) if steps else floor
        if free.sum() >= 4:
            break
    if free.any():  # keep the largest connected free region (the room, not a gap behind a cupboard)
        lab, n = ndimage.label(free)
        sizes = ndimage.sum(free, lab, index=np.arange(1, n + 1))
        free = lab == (1 + int(np.argmax(sizes)))
    return FloorPlan(origin, cfg.cell, free, floor_z, top_z)


def camera_path(vertices: np.ndarray, n_views: int, seed: int = 0, cfg: CameraPathConfig | None = None) -> list[np.ndarray]:
    """``n_views`` camera-to-world poses walking around the free floor area of the mesh."""
    cfg = cfg or CameraPathConfig()
    rng = np.random.default_rng(seed)
    plan = floor_plan(vertices, cfg)
    free_ij = np.argwhere(plan.free)
    if len(free_ij) == 0:  # no free floor found (not an indoor scan?): circle the bounding box centre
        v = np.asarray(vertices, dtype=np.float64)
        free_xy = ((v[:, :2].min(0) + v[:, :2].max(0)) / 2)[None]
    else:
        free_xy = plan.cell_center(free_ij)
    centre = free_xy.mean(axis=0)
    # Distance from the centre to the edge of the free area, per direction (for the walk radius).
    rel = free_xy - centre
    ang_cells = np.arctan2(rel[:, 1], rel[:, 0])
    dist_cells = np.linalg.norm(rel, axis=1)
    # Cameras at most head height; lower when the scan itself is low (a cropped mesh).
    max_h = max(0.5, 0.95 * (plan.top_z - plan.floor_z))
    start = rng.uniform(0, 2 * math.pi)
    poses = []
    for k in range(n_views):
        theta = start + 2 * math.pi * cfg.loops * k / max(1, n_views) + rng.normal(0, 0.05)
        diff = np.abs((ang_cells - theta + math.pi) % (2 * math.pi) - math.pi)
        near_dir = diff < 0.35
        reach = float(dist_cells[near_dir].max()) if near_dir.any() else float(dist_cells.max(initial=0.0))
        r = cfg.radius_fraction * reach * rng.uniform(0.85, 1.1)
        xy = centre + r * np.array([math.cos(theta), math.sin(theta)])
        if len(free_ij) and not plan.is_free(xy):  # snap to the nearest free cell
            xy = free_xy[np.argmin(np.linalg.norm(free_xy - xy, axis=1))]
        xy = xy + rng.normal(0, 0.03, 2)
        h = min(rng.uniform(*cfg.height), max_h)
        # Look back across the centre towards the opposite side of the room.
        to_centre = centre - xy
        yaw = (math.atan2(to_centre[1], to_centre[0]) if np.linalg.norm(to_centre) > 0.2 else theta + math.pi)
        yaw += math.radians(rng.uniform(-cfg.yaw_jitter_deg, cfg.yaw_jitter_deg))
        pitch = math.radians(rng.uniform(*cfg.pitch_deg))
        roll = math.radians(rng.normal(0, cfg.roll_deg))
        poses.append(look_pose(np.array([xy[0], xy[1], plan.floor_z + h]), yaw, pitch, roll))
    return poses
