"""Procedurally generated indoor rooms: the embedded default dataset (no download needed).

A room is a triangle mesh built from subdivided boxes, cylinders and draped sheets (edges of a
few centimetres, so per-vertex labels and mesh superpoints have enough vertices to work with),
with per-vertex colours and ScanNet20 labels. Walls and floor, no ceiling (ScanNet20 has no
ceiling class; the rendered cameras look down-ish). Furniture is placed by rejection sampling on
the floor plan. Room types together cover all 20 ScanNet classes; the default 3 training rooms
(living room, bathroom, studio) already do.

:func:`build_embedded_dataset` writes rooms in the ScanNet export layout, with rendered RGB-D
frames numbered 0, 20, 40, ... so the ScanNet reader's default ``frame_stride=20`` loads them all.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sas3d.demo.furniture import (FLOORS, WALLS, _col, bathtub, bed, bookshelf, cabinet, chair,
                                  coffee_table, curtains, desk, door, kitchen_counter, nightstand, picture, refrigerator,
                                  shelf_unit, sofa, table, toilet, vanity, wardrobe, window)
from sas3d.demo.labels import L, PROP, WALL_HEIGHT
from sas3d.scene.types import IGNORE_LABEL
from sas3d.text.labelsets import NYU40_TO_SCANNET20_IDS


ROOM_TYPES = ("living", "bathroom", "studio", "office", "bedroom", "kitchen")


@dataclass
class RoomMesh:
    """A generated room: vertices (V,3) float32 metres (z up, floor at z=0), faces (F,3) int64,
    colors (V,3) uint8, labels (V,) int64 ScanNet20 indices (255 = ignore), instances (V,) int64
    object instance ids 1..I (0 = no instance: the unlabelled props)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    room_type: str
    size: tuple[float, float]
    objects: list[str] = field(default_factory=list)
    instances: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------
# Mesh building


class _Builder:
    """Accumulates subdivided primitives in an object-local frame (x, y rotated by ``yaw``, then shifted)."""

    def __init__(self, rng: np.random.Generator, edge: float):
        self.rng = rng
        self.edge = edge
        self.verts: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.labs: list[np.ndarray] = []
        self.objs: list[np.ndarray] = []
        self.obj = 0  # current object; each (object, label) pair becomes one instance
        self.n = 0
        self.frame = (0.0, 0.0, 0.0)  # x, y, yaw of the current object

    def begin_object(self) -> None:
        """Start a new object: its primitives form one instance per label (a counter's cabinet, top and
        sink are three instances, as ScanNet annotates them)."""
        self.obj += 1

    def _emit(self, v: np.ndarray, f: np.ndarray, color, label: int, noise: float = 5.0,
              color_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        x0, y0, yaw = self.frame
        c, s = math.cos(yaw), math.sin(yaw)
        world = np.empty_like(v)
        world[:, 0] = c * v[:, 0] - s * v[:, 1] + x0
        world[:, 1] = s * v[:, 0] + c * v[:, 1] + y0
        world[:, 2] = v[:, 2]
        base = np.broadcast_to(np.asarray(color, dtype=np.float32), (len(v), 3))
        if color_fn is not None:
            base = color_fn(world)
        col = base + self.rng.normal(0.0, noise, size=(len(v), 3))
        self.verts.append(world.astype(np.float32))
        self.faces.append(f + self.n)
        self.cols.append(np.clip(np.rint(col), 0, 255).astype(np.uint8))
        self.labs.append(np.full(len(v), label, dtype=np.int64))
        self.objs.append(np.full(len(v), self.obj, dtype=np.int64))
        self.n += len(v)

    def quad(self, origin, a, b, color, label, offset_fn=None, **kw) -> None:
        """A parallelogram ``origin + s*a + t*b`` subdivided into a grid of ~edge-sized cells."""
        origin, a, b = (np.asarray(x, dtype=np.float64) for x in (origin, a, b))
        nu = max(1, math.ceil(np.linalg.norm(a) / self.edge))
        nv = max(1, math.ceil(np.linalg.norm(b) / self.edge))
        s, t = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1), indexing="ij")
        v = origin + s.reshape(-1, 1) * a + t.reshape(-1, 1) * b
        if offset_fn is not None:
            v = v + offset_fn(s.reshape(-1), t.reshape(-1))
        idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
        p00, p10, p01, p11 = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
        f = np.concatenate([np.stack([p00, p10, p11], 1), np.stack([p00, p11, p01], 1)])
        self._emit(v, f, color, label, **kw)

    def box(self, lo, hi, color, label, bottom: bool = False, **kw) -> None:
        """Axis-aligned (in the object frame) box from corner ``lo`` to ``hi``; the bottom face only if asked."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        dx, dy, dz = (x1 - x0, 0, 0), (0, y1 - y0, 0), (0, 0, z1 - z0)
        self.quad((x0, y0, z1), dx, dy, color, label, **kw)  # top
        self.quad((x0, y0, z0), dx, dz, color, label, **kw)  # front (-y)
        self.quad((x0, y1, z0), dx, dz, color, label, **kw)  # back (+y)
        self.quad((x0, y0, z0), dy, dz, color, label, **kw)  # left (-x)
        self.quad((x1, y0, z0), dy, dz, color, label, **kw)  # right (+x)
        if bottom:
            self.quad((x0, y0, z0), dx, dy, color, label, **kw)

    def cylinder(self, cx, cy, z0, radius, height, color, label, top: bool = True, bottom: bool = False, **kw) -> None:
        """Vertical cylinder (object frame), side subdivided along height and circumference, capped discs."""
        nseg = max(8, math.ceil(2 * math.pi * radius / self.edge))
        nh = max(1, math.ceil(height / self.edge))
        ang = np.linspace(0, 2 * math.pi, nseg, endpoint=False)
        zs = np.linspace(z0, z0 + height, nh + 1)
        ring = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)
        v = np.concatenate([np.column_stack([ring, np.full(nseg, z)]) for z in zs])
        idx = np.arange(len(v)).reshape(nh + 1, nseg)
        nxt = np.roll(idx, -1, axis=1)
        f = np.concatenate([np.stack([idx[:-1].ravel(), nxt[:-1].ravel(), nxt[1:].ravel()], 1),
                            np.stack([idx[:-1].ravel(), nxt[1:].ravel(), idx[1:].ravel()], 1)])
        self._emit(v, f, color, label, **kw)
        for z, want in ((z0 + height, top), (z0, bottom)):
            if want:
                self.disc(cx, cy, z, radius, color, label, nseg=nseg, **kw)

    def disc(self, cx, cy, z, radius, color, label, nseg: int | None = None, **kw) -> None:
        """Horizontal disc as concentric rings (so it has interior vertices too)."""
        nseg = nseg or max(8, math.ceil(2 * math.pi * radius / self.edge))
        nr = max(1, math.ceil(radius / self.edge))
        ang = np.linspace(0, 2 * math.pi, nseg, endpoint=False)
        rings = [np.array([[cx, cy, z]])]
        for k in range(1, nr + 1):
            r = radius * k / nr
            rings.append(np.column_stack([cx + r * np.cos(ang), cy + r * np.sin(ang), np.full(nseg, z)]))
        v = np.concatenate(rings)
        f = [np.stack([np.zeros(nseg, np.int64), 1 + np.arange(nseg), 1 + (np.arange(nseg) + 1) % nseg], 1)]
        for k in range(1, nr):
            a = 1 + (k - 1) * nseg + np.arange(nseg)
            b = 1 + k * nseg + np.arange(nseg)
            an, bn = np.roll(a, -1), np.roll(b, -1)
            f += [np.stack([a, an, bn], 1), np.stack([a, bn, b], 1)]
        self._emit(v, np.concatenate(f), color, label, **kw)

    def sheet(self, x0, x1, y, z0, z1, color, label, folds: float, depth: float, **kw) -> None:
        """A hanging curtain: vertical sheet along x at ``y`` with sinusoidal folds (amplitude ``depth``)."""
        width = x1 - x0
        phase = self.rng.uniform(0, 2 * math.pi)

        def folds_fn(s, t):
            off = np.zeros((len(s), 3))
            off[:, 1] = depth * np.sin(2 * math.pi * folds * s + phase)
            return off

        self.quad((x0, y, z0), (width, 0, 0), (0, 0, z1 - z0), color, label, offset_fn=folds_fn, **kw)

    def mesh(self, room_type: str, size: tuple[float, float], objects: list[str]) -> RoomMesh:
        labels = np.concatenate(self.labs)
        return RoomMesh(
            vertices=np.concatenate(self.verts), faces=np.concatenate(self.faces).astype(np.int64),
            colors=np.concatenate(self.cols), labels=labels,
            room_type=room_type, size=size, objects=objects,
            instances=_instance_ids(np.concatenate(self.objs), labels),
        )


def _instance_ids(objects: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(V,) instance ids 1..I, one per (object, label) pair numbered by first vertex; 0 for unlabelled props."""
    out = np.zeros(len(labels), dtype=np.int64)
    keep = labels != PROP
    if keep.any():
        _, first, inverse = np.unique(objects[keep] * (IGNORE_LABEL + 1) + labels[keep], return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1)
        out[keep] = rank[inverse.reshape(-1)]
    return out


@dataclass
class _Item:
    name: str
    fn: Callable
    w: tuple[float, float]  # width range (along the wall)
    d: tuple[float, float]  # depth range
    place: str  # "wall" (back to a wall), "corner" or "free"
    count: tuple[int, int] = (1, 1)


def _catalogue(room_type: str) -> tuple[list[_Item], dict]:
    """Furniture list (placed in order, big things first) and wall-item counts for a room type."""
    I = _Item  # noqa: E741 - short local alias keeps the tables readable
    chairs = I("chair", chair, (0.42, 0.5), (0.42, 0.5), "free", (1, 3))
    misc = I("otherfurniture", shelf_unit, (0.35, 0.8), (0.3, 0.5), "wall", (1, 2))
    furniture = {
        "living": [I("sofa", sofa, (1.5, 2.2), (0.85, 0.95), "wall"), I("sofa", sofa, (0.9, 1.6), (0.85, 0.95), "wall", (0, 1)),
                   I("bookshelf", bookshelf, (0.6, 1.2), (0.3, 0.38), "wall", (1, 2)),
                   I("cabinet", cabinet, (0.8, 1.6), (0.4, 0.5), "wall"),
                   I("table", coffee_table, (0.8, 1.2), (0.5, 0.7), "free"),
                   I("table", table, (1.0, 1.4), (0.8, 0.9), "free", (0, 1)), chairs, misc],
        "bathroom": [I("bathtub", bathtub, (1.5, 1.7), (0.7, 0.8), "corner"),
                     I("counter", vanity, (0.7, 1.2), (0.5, 0.55), "wall"),
                     I("toilet", toilet, (0.42, 0.45), (0.65, 0.7), "wall"),
                     I("cabinet", cabinet, (0.4, 0.7), (0.3, 0.4), "wall"), misc],
        "studio": [I("bed", bed, (1.0, 1.6), (1.9, 2.1), "wall"),
                   I("counter", kitchen_counter, (1.6, 2.4), (0.6, 0.65), "corner"),
                   I("refrigerator", refrigerator, (0.6, 0.75), (0.65, 0.72), "wall"),
                   I("desk", desk, (1.0, 1.4), (0.6, 0.75), "wall"),
                   I("table", table, (0.7, 1.0), (0.7, 0.9), "free"), chairs,
                   I("cabinet", nightstand, (0.4, 0.5), (0.4, 0.45), "wall")],
        "office": [I("desk", desk, (1.2, 1.6), (0.7, 0.8), "wall", (2, 4)),
                   I("bookshelf", bookshelf, (0.8, 1.2), (0.3, 0.38), "wall", (1, 2)),
                   I("cabinet", cabinet, (0.5, 1.0), (0.45, 0.6), "wall", (1, 2)),
                   I("table", table, (1.4, 2.0), (0.8, 1.0), "free"),
                   I("chair", chair, (0.45, 0.52), (0.45, 0.52), "free", (3, 6)), misc],
        "bedroom": [I("bed", bed, (1.4, 1.8), (1.95, 2.1), "wall"),
                    I("cabinet", nightstand, (0.4, 0.5), (0.38, 0.45), "wall", (1, 2)),
                    I("cabinet", wardrobe, (1.0, 1.6), (0.55, 0.62), "wall"),
                    I("desk", desk, (1.0, 1.3), (0.55, 0.7), "wall"), I("chair", chair, (0.42, 0.48), (0.42, 0.48), "free"),
                    I("bookshelf", bookshelf, (0.6, 0.9), (0.28, 0.35), "wall", (0, 1)), misc],
        "kitchen": [I("counter", kitchen_counter, (2.0, 3.0), (0.6, 0.65), "corner"),
                    I("refrigerator", refrigerator, (0.6, 0.75), (0.65, 0.72), "wall"),
                    I("cabinet", cabinet, (0.8, 1.2), (0.4, 0.5), "wall"),
                    I("table", table, (1.0, 1.5), (0.8, 0.9), "free"), I("chair", chair, (0.42, 0.48), (0.42, 0.48), "free", (2, 4)), misc],
    }[room_type]
    walls = {  # windows, pictures, curtains on windows
        "living": dict(windows=(1, 2), pictures=(2, 3), curtains=True),
        "bathroom": dict(windows=(0, 1), pictures=(0, 1), curtains=False),
        "studio": dict(windows=(1, 2), pictures=(1, 2), curtains=True),
        "office": dict(windows=(2, 3), pictures=(1, 2), curtains=False),
        "bedroom": dict(windows=(1, 2), pictures=(1, 3), curtains=True),
        "kitchen": dict(windows=(1, 1), pictures=(0, 1), curtains=False),
    }[room_type]
    return furniture, walls


class _Plan:
    """Occupied floor rectangles and wall intervals, for rejection sampling."""

    def __init__(self, sx: float, sy: float):
        self.sx, self.sy = sx, sy
        self.rects: list[tuple[float, float, float, float]] = []
        self.wall_spans: dict[int, list[tuple[float, float, float, float]]] = {k: [] for k in range(4)}

    def wall_length(self, wall: int) -> float:
        return self.sx if wall in (0, 2) else self.sy

    def wall_frame(self, wall: int, s: float, offset: float) -> tuple[float, float, float]:
        """Object frame (x, y, yaw) at distance ``s`` along ``wall`` and ``offset`` into the room,
        oriented so object +x runs along the wall and object -y faces into the room."""
        if wall == 0:  # y = 0, room is +y
            return s, offset, math.pi
        if wall == 1:  # x = sx
            return self.sx - offset, s, -math.pi / 2
        if wall == 2:  # y = sy, s runs from x = sx towards x = 0 (as for wall-mounted items)
            return self.sx - s, self.sy - offset, 0.0
        return offset, self.sy - s, math.pi / 2  # x = 0, s runs from y = sy towards y = 0

    def wall_item_frame(self, wall: int) -> tuple[float, float, float]:
        """Frame for wall-mounted items: x along the wall, +y into the room."""
        return {0: (0.0, 0.0, 0.0), 1: (self.sx, 0.0, math.pi / 2), 2: (self.sx, self.sy, math.pi),
                3: (0.0, self.sy, -math.pi / 2)}[wall]

    def free(self, rect, clearance: float) -> bool:
        x0, y0, x1, y1 = rect
        if x0 < 0.02 or y0 < 0.02 or x1 > self.sx - 0.02 or y1 > self.sy - 0.02:
            return False
        return all(x1 + clearance <= a or a1 + clearance <= x0 or y1 + clearance <= b or b1 + clearance <= y0
                   for a, b, a1, b1 in self.rects)

    def span_free(self, wall: int, s0: float, s1: float, z0: float, z1: float) -> bool:
        if s0 < 0.0 or s1 > self.wall_length(wall):
            return False
        return all(s1 + 0.1 <= a or a1 + 0.1 <= s0 or z1 <= b or b1 <= z0 for a, b, a1, b1 in self.wall_spans[wall])


def _footprint(x, y, yaw, w, d):
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    hx, hy = c * w / 2 + s * d / 2, s * w / 2 + c * d / 2
    return (x - hx, y - hy, x + hx, y + hy)


def generate_room(seed: int, room_type: str | None = None, size: tuple[float, float] | None = None,
                  edge: float = 0.05) -> RoomMesh:
    """Generate one furnished room, deterministic per ``(seed, room_type, size, edge)``.

    ``room_type`` is one of :data:`ROOM_TYPES` (default: chosen by ``seed``); ``size`` (x, y) metres
    (default: random 4-7 m, bathrooms 3.5-4.5 m); ``edge`` is the target mesh edge length.
    """
    rng = np.random.default_rng(seed)
    room_type = room_type or ROOM_TYPES[seed % len(ROOM_TYPES)]
    if room_type not in ROOM_TYPES:
        raise ValueError(f"unknown room type {room_type!r}; use one of {ROOM_TYPES}")
    lo, hi = (3.5, 4.5) if room_type == "bathroom" else (4.0, 7.0)
    sx, sy = size or (round(float(rng.uniform(lo, hi)), 2), round(float(rng.uniform(lo, hi)), 2))
    b = _Builder(rng, edge)
    plan = _Plan(sx, sy)
    objects: list[str] = []

    # Floor (with a plank / tile pattern) and the four walls.
    floor_c = _col(rng, FLOORS, 10)
    tile = room_type in ("bathroom", "kitchen")
    period = rng.uniform(0.15, 0.3) if not tile else rng.uniform(0.3, 0.5)

    def floor_pattern(p):
        if tile:
            k = (np.floor(p[:, 0:1] / period) + np.floor(p[:, 1:2] / period)) % 2
            return floor_c * (0.9 + 0.15 * k)
        return floor_c * (0.9 + 0.1 * np.sin(np.floor(p[:, 0:1] / period) * 2.3))

    b.begin_object()
    b.quad((0, 0, 0), (sx, 0, 0), (0, sy, 0), floor_c, L["floor"], color_fn=floor_pattern)
    wall_c = _col(rng, WALLS, 8)
    for a, u in (((0, 0, 0), (sx, 0, 0)), ((sx, 0, 0), (0, sy, 0)), ((sx, sy, 0), (-sx, 0, 0)), ((0, sy, 0), (0, -sy, 0))):
        b.begin_object()
        b.quad(a, u, (0, 0, WALL_HEIGHT), wall_c, L["wall"], noise=4.0)
    objects += ["floor", "wall"]

    # Door first (its swing area stays free), then windows.
    wall = int(rng.integers(4))
    width = float(rng.uniform(0.8, 0.95))
    s0 = float(rng.uniform(0.2, plan.wall_length(wall) - width - 0.2))
    b.frame = plan.wall_item_frame(wall)
    b.begin_object()
    door(b, rng, s0, width)
    plan.wall_spans[wall].append((s0 - 0.1, 0.0, s0 + width + 0.1, 2.2))
    fx, fy, fyaw = plan.wall_frame(wall, s0 + width / 2, 0.45)
    plan.rects.append(_footprint(fx, fy, fyaw, width + 0.2, 0.9))
    objects.append("door")

    furniture, wall_items = _catalogue(room_type)
    n_win = int(rng.integers(wall_items["windows"][0], wall_items["windows"][1] + 1))
    for _ in range(n_win):
        for _attempt in range(30):
            wall = int(rng.integers(4))
            width, height = float(rng.uniform(0.8, 1.6)), float(rng.uniform(1.0, 1.4))
            z0 = float(rng.uniform(0.8, 1.0))
            s0 = float(rng.uniform(0.4, max(0.41, plan.wall_length(wall) - width - 0.4)))
            margin = 0.25 if wall_items["curtains"] else 0.0
            if plan.span_free(wall, s0 - margin, s0 + width + margin, 0.0, z0 + height + 0.1):
                b.frame = plan.wall_item_frame(wall)
                b.begin_object()
                window(b, rng, s0, width, z0, height)
                plan.wall_spans[wall].append((s0 - margin, z0, s0 + width + margin, z0 + height))
                objects.append("window")
                if wall_items["curtains"]:
                    bottom = 0.02 if rng.random() < 0.6 else z0 - 0.1
                    curtains(b, rng, s0, width, min(z0 + height + 0.15, WALL_HEIGHT - 0.1), bottom)
                    objects.append("curtain")
                    if bottom < 0.1:  # floor-length curtains take floor space
                        fx, fy, fyaw = plan.wall_frame(wall, s0 + width / 2, 0.12)
                        plan.rects.append(_footprint(fx, fy, fyaw, width + 0.4, 0.2))
                break

    # Furniture, big things first; a failed placement is dropped (the room is just emptier).
    table_rects: list[tuple[float, float, float, float]] = []
    for item in furniture:
        n = int(rng.integers(item.count[0], item.count[1] + 1))
        for _ in range(n):
            w, d = float(rng.uniform(*item.w)), float(rng.uniform(*item.d))
            placed = None
            for _attempt in range(60):
                if item.place in ("wall", "corner"):
                    wall = int(rng.integers(4))
                    length = plan.wall_length(wall)
                    if length < w + 0.1:
                        continue
                    s = w / 2 + 0.03 if item.place == "corner" else float(rng.uniform(w / 2 + 0.03, length - w / 2 - 0.03))
                    if item.place == "corner" and rng.random() < 0.5:
                        s = length - w / 2 - 0.03
                    x, y, yaw = plan.wall_frame(wall, s, d / 2 + 0.03)
                    tall = item.fn in (bookshelf, wardrobe, refrigerator) or item.name == "cabinet"
                    if tall and not plan.span_free(wall, s - w / 2, s + w / 2, 0.0, 2.1):
                        continue
                    if item.fn is kitchen_counter and not plan.span_free(wall, s - w / 2, s + w / 2, 0.0, 0.95):
                        continue
                elif item.name == "chair" and table_rects and rng.random() < 0.8:
                    tx0, ty0, tx1, ty1 = table_rects[int(rng.integers(len(table_rects)))]
                    side = int(rng.integers(4))  # chair pulled up to one side of a table, facing it
                    cx, cy = (tx0 + tx1) / 2, (ty0 + ty1) / 2
                    jit = float(rng.uniform(-0.25, 0.25))
                    x, y, yaw = [(cx + jit * (tx1 - tx0), ty0 - d / 2 - 0.05, math.pi),
                                 (tx1 + d / 2 + 0.05, cy + jit * (ty1 - ty0), -math.pi / 2),
                                 (cx + jit * (tx1 - tx0), ty1 + d / 2 + 0.05, 0.0),
                                 (tx0 - d / 2 - 0.05, cy + jit * (ty1 - ty0), math.pi / 2)][side]
                    yaw += float(rng.normal(0, 0.15))
                else:
                    x, y = float(rng.uniform(0.6, sx - 0.6)), float(rng.uniform(0.6, sy - 0.6))
                    yaw = float(rng.integers(4)) * math.pi / 2 + (float(rng.normal(0, 0.3)) if item.name == "chair" else 0.0)
                rect = _footprint(x, y, yaw, w, d)
                clearance = 0.02 if item.name == "chair" else 0.25 if item.place == "free" else 0.05
                if plan.free(rect, clearance):
                    placed = (x, y, yaw, (wall, s) if item.place in ("wall", "corner") else None)
                    break
            if placed is None:
                continue
            x, y, yaw, on_wall = placed
            b.frame = (x, y, yaw)
            b.begin_object()
            item.fn(b, rng, w, d)
            plan.rects.append(_footprint(x, y, yaw, w, d))
            if item.name == "table":
                table_rects.append(_footprint(x, y, yaw, w, d))
            if on_wall is not None:
                wall, s_c = on_wall
                plan.wall_spans[wall].append((s_c - w / 2, 0.0, s_c + w / 2, 2.1 if item.fn in (bookshelf, wardrobe, refrigerator) else 1.0))
            objects.append(item.name)
            if item.fn is kitchen_counter:
                objects += ["cabinet", "sink"]
            if item.fn is vanity:
                objects += ["cabinet", "sink"]
            if item.fn is bathtub:
                objects.append("shower curtain")

    # Pictures in free wall spans above furniture.
    n_pic = int(rng.integers(wall_items["pictures"][0], wall_items["pictures"][1] + 1))
    for _ in range(n_pic):
        for _attempt in range(30):
            wall = int(rng.integers(4))
            width, height = float(rng.uniform(0.35, 1.0)), float(rng.uniform(0.3, 0.8))
            z0 = float(rng.uniform(1.2, 1.6))
            s0 = float(rng.uniform(0.3, max(0.31, plan.wall_length(wall) - width - 0.3)))
            if plan.span_free(wall, s0, s0 + width, z0 - 0.1, z0 + height + 0.1):
                b.frame = plan.wall_item_frame(wall)
                b.begin_object()
                picture(b, rng, s0, width, z0, height)
                plan.wall_spans[wall].append((s0, z0, s0 + width, z0 + height))
                objects.append("picture")
                break
    return b.mesh(room_type, (sx, sy), objects)


# ----------------------------------------------------------------------------------------------
# Embedded dataset (ScanNet export layout)

TRAIN_TYPES = ("living", "bathroom", "studio")  # together: all 20 ScanNet classes
VAL_TYPES = ("office", "bedroom", "kitchen")
MANIFEST = "embedded.json"
GENERATOR_VERSION = 2  # 2: instance annotation files; bump when room generation or rendering changes, so old builds are rebuilt


def write_room(room: RoomMesh, scene_dir: str | Path, name: str, n_views: int, width: int, height: int,
               seed: int, progress: bool = False):
    """Write one room as a ScanNet export: mesh, NYU40 labels PLY, instance annotation and rendered frames."""
    from sas3d.demo.render import render_views
    from sas3d.scene.ply import write_ply

    scene_dir = Path(scene_dir)
    scene_dir.mkdir(parents=True, exist_ok=True)
    nyu = np.zeros(len(room.labels), dtype=np.uint16)  # 0 = unlabeled for ignore
    valid = room.labels != IGNORE_LABEL
    nyu[valid] = np.asarray(NYU40_TO_SCANNET20_IDS, dtype=np.uint16)[room.labels[valid]]
    comment = f"sas3d procedural room ({room.room_type}), seed {seed}"
    write_ply(scene_dir / f"{name}_vh_clean_2.ply", room.vertices, room.colors, room.faces, comment=comment)
    write_ply(scene_dir / f"{name}_vh_clean_2.labels.ply", room.vertices, room.colors, room.faces,
              vertex_props={"label": nyu}, comment=comment)
    if room.instances is not None:  # instance ground truth as ScanNet ships it (segs.json + aggregation.json)
        from sas3d.instances.scannet_gt import write_scannet_annotation

        write_scannet_annotation(scene_dir, name, room.instances, nyu)
    return render_views(room.vertices, room.faces, room.colors, room.labels, scene_dir, n_views, width, height,
                        seed=seed, progress=progress)


def build_embedded_dataset(out_dir: str | Path, n_train: int = 3, n_val: int = 1, n_views: int = 30,
                           width: int = 320, height: int = 240, seed: int = 0, force: bool = False,
                           progress: bool = True) -> dict[str, list[Path]]:
    """Generate the embedded default dataset under ``out_dir``: ``train/`` and ``val/`` scene dirs.

    Room types cycle through :data:`TRAIN_TYPES` for training and :data:`VAL_TYPES` for validation.
    Frames are numbered 0, 20, 40, ... so ``load_scene`` with its default ``frame_stride=20`` reads
    all ``n_views``. An existing build with the same parameters (``embedded.json``) is reused;
    otherwise everything is built in a temporary folder and renamed into place.
    Returns ``dict(train=[scene dirs], val=[scene dirs])``.
    """
    from tqdm import tqdm

    from sas3d.utils.atomic import make_temp_dir, write_json_atomic

    out_dir = Path(out_dir)
    params = dict(version=GENERATOR_VERSION, n_train=n_train, n_val=n_val, n_views=n_views, width=width,
                  height=height, seed=seed)
    specs = [("train", f"scene{9000 + i:04d}_00", TRAIN_TYPES[i % len(TRAIN_TYPES)], seed * 1000 + i) for i in range(n_train)]
    specs += [("val", f"scene{9500 + i:04d}_00", VAL_TYPES[i % len(VAL_TYPES)], seed * 1000 + 500 + i) for i in range(n_val)]
    result = {"train": [out_dir / s / n for s, n, _, _ in specs if s == "train"],
              "val": [out_dir / s / n for s, n, _, _ in specs if s == "val"]}
    manifest = out_dir / MANIFEST
    if not force and manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("params") == params and all(p.is_dir() for ps in result.values() for p in ps):
            return result
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, out_dir.name)
    try:
        rooms = []
        for split, name, room_type, room_seed in tqdm(specs, desc="embedded rooms", unit="room", disable=not progress):
            room = generate_room(room_seed, room_type)
            report = write_room(room, tmp / split / name, name, n_views, width, height, room_seed)
            rooms.append(dict(split=split, name=name, room_type=room_type, seed=room_seed, size=room.size,
                              vertices=len(room.vertices), faces=len(room.faces), objects=sorted(set(room.objects)),
                              coverage=round(report.coverage, 4)))
        write_json_atomic(tmp / MANIFEST, dict(params=params, rooms=rooms, note="procedurally generated rooms (sas3d.demo.rooms)"))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
