"""Image generators for capability construction: (class name, seed) -> image + pseudo mask.

:class:`ProceduralGenerator` is the offline default: it draws one object of the class (a class-specific
silhouette made of PIL polygons) over a simple room-like background and returns its exact mask. It
stands in for Stable Diffusion + SAM (``sas3d.capability.diffusion``) where no weights are available.
Background pixels carry no label (255 in the ground-truth label image): they are "not the class",
which is all the capability score needs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class GeneratedImage:
    """One synthetic image of a class and its (pseudo) mask."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, True on the object of the class


class Generator(Protocol):
    """Anything that turns (class name, seed) into a :class:`GeneratedImage`."""

    name: str

    def generate(self, class_name: str, seed: int) -> GeneratedImage: ...


Box = tuple[float, float, float, float]


class ProceduralGenerator:
    """Deterministic per (class, seed) drawings of indoor classes with exact masks (offline default).

    Unknown classes get a generic shape chosen by a hash of the name, so any vocabulary works.
    """

    name = "procedural"

    def __init__(self, size: int = 128):
        self.size = size

    def generate(self, class_name: str, seed: int) -> GeneratedImage:
        s = self.size
        rng = np.random.default_rng([zlib.crc32(class_name.encode()), seed])
        img = Image.new("RGB", (s, s))
        mask = Image.new("L", (s, s), 0)
        _background(ImageDraw.Draw(img), s, rng)
        colour = tuple(int(v) for v in rng.integers(30, 230, size=3))
        draw = _Pen(ImageDraw.Draw(img), ImageDraw.Draw(mask), colour, rng)
        # Object box: random size and position, so poses/scales vary per seed.
        w = s * rng.uniform(0.45, 0.75)
        h = s * rng.uniform(0.45, 0.75)
        x0 = rng.uniform(0.05 * s, s - w - 0.05 * s)
        y0 = rng.uniform(0.05 * s, s - h - 0.05 * s)
        box = (x0, y0, x0 + w, y0 + h)
        fn = _SHAPES.get(class_name) or _GENERIC[zlib.crc32(class_name.encode()) % len(_GENERIC)]
        fn(draw, box, s, bool(rng.random() < 0.5))
        arr = np.asarray(img, dtype=np.uint8).copy()
        # Mild pixel noise so teachers cannot key on flat colours alone.
        noise = rng.normal(0, 6, size=arr.shape)
        arr = np.clip(arr.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return GeneratedImage(arr, np.asarray(mask) > 0)


class _Pen:
    """Draws the same polygon into the colour image and the mask."""

    def __init__(self, img: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, colour: tuple[int, ...], rng: np.random.Generator):
        self.img, self.mask, self.colour, self.rng = img, mask, colour, rng

    def shade(self, factor: float) -> tuple[int, ...]:
        return tuple(int(np.clip(c * factor, 0, 255)) for c in self.colour)

    def rect(self, x0: float, y0: float, x1: float, y1: float, shade: float = 1.0, in_mask: bool = True) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], shade, in_mask)

    def poly(self, pts: list[tuple[float, float]], shade: float = 1.0, in_mask: bool = True) -> None:
        self.img.polygon(pts, fill=self.shade(shade))
        if in_mask:
            self.mask.polygon(pts, fill=255)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, shade: float = 1.0, in_mask: bool = True) -> None:
        self.img.ellipse([x0, y0, x1, y1], fill=self.shade(shade))
        if in_mask:
            self.mask.ellipse([x0, y0, x1, y1], fill=255)

    def line(self, x0: float, y0: float, x1: float, y1: float, shade: float, width: int) -> None:
        # Details drawn inside the object (shelf edges, panes) stay part of its mask.
        self.img.line([x0, y0, x1, y1], fill=self.shade(shade), width=width)


def _background(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    """A wall above a floor with a random horizon and colours."""
    horizon = rng.uniform(0.5, 0.8) * s
    wall = tuple(int(v) for v in rng.integers(120, 240, size=3))
    floor = tuple(int(v) for v in rng.integers(40, 160, size=3))
    d.rectangle([0, 0, s, horizon], fill=wall)
    d.rectangle([0, horizon, s, s], fill=floor)


def _chair(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    seat = y0 + 0.5 * h
    back_x = x1 - 0.15 * w if flip else x0
    p.rect(back_x, y0, back_x + 0.15 * w, seat)  # back
    p.rect(x0, seat, x1, seat + 0.1 * h, 0.85)  # seat
    for lx in (x0, x1 - 0.08 * w):
        p.rect(lx, seat + 0.1 * h, lx + 0.08 * w, y1, 0.7)  # legs


def _table(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    top = y0 + 0.3 * h
    p.poly([(x0 + 0.1 * w, y0 + 0.15 * h), (x1 - 0.1 * w, y0 + 0.15 * h), (x1, top), (x0, top)])
    for lx in (x0 + 0.03 * w, x1 - 0.1 * w):
        p.rect(lx, top, lx + 0.07 * w, y1, 0.7)


def _desk(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    top = y0 + 0.25 * h
    p.rect(x0, top, x1, top + 0.08 * h)
    dx = x1 - 0.35 * w if flip else x0
    p.rect(dx, top + 0.08 * h, dx + 0.35 * w, y1, 0.8)  # drawer block
    for k in range(3):
        yy = top + 0.08 * h + (k + 1) * (y1 - top) / 4
        p.line(dx + 0.05 * w, yy, dx + 0.3 * w, yy, 0.5, 1)
    lx = x0 if flip else x1 - 0.06 * w
    p.rect(lx, top + 0.08 * h, lx + 0.06 * w, y1, 0.7)


def _bed(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    hx = x0 if not flip else x1 - 0.1 * w
    p.rect(hx, y0, hx + 0.1 * w, y1, 0.6)  # headboard
    p.rect(x0, y0 + 0.45 * h, x1, y1 - 0.1 * h)  # mattress
    px = x0 + 0.12 * w if not flip else x1 - 0.32 * w
    p.ellipse(px, y0 + 0.35 * h, px + 0.2 * w, y0 + 0.5 * h, 1.3)  # pillow
    p.rect(x0, y1 - 0.1 * h, x1, y1, 0.5)  # frame


def _sofa(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    p.rect(x0 + 0.1 * w, y0 + 0.2 * h, x1 - 0.1 * w, y0 + 0.6 * h, 0.8)  # back
    p.rect(x0, y0 + 0.4 * h, x0 + 0.15 * w, y1 - 0.05 * h)  # arms
    p.rect(x1 - 0.15 * w, y0 + 0.4 * h, x1, y1 - 0.05 * h)
    p.rect(x0 + 0.15 * w, y0 + 0.6 * h, x1 - 0.15 * w, y1 - 0.1 * h, 1.1)  # cushions
    p.rect(x0 + 0.05 * w, y1 - 0.05 * h, x1 - 0.05 * w, y1, 0.5)


def _door(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w = 0.5 * (x1 - x0)
    x1 = x0 + w
    p.rect(x0, y0 - 0.1 * s if y0 > 0.1 * s else y0, x1, y1)
    kx = x0 + 0.1 * w if flip else x1 - 0.2 * w
    ky = 0.5 * (y0 + y1)
    p.ellipse(kx, ky, kx + 0.1 * w, ky + 0.1 * w, 0.4)  # knob


def _window(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    y1 = y0 + 0.7 * (y1 - y0)
    p.rect(x0, y0, x1, y1, 0.9)
    glass = p.colour
    p.colour = (170, 210, 240)
    p.rect(x0 + 3, y0 + 3, x1 - 3, y1 - 3)
    p.colour = glass
    p.line((x0 + x1) / 2, y0, (x0 + x1) / 2, y1, 0.9, 3)  # panes
    p.line(x0, (y0 + y1) / 2, x1, (y0 + y1) / 2, 0.9, 3)


def _picture(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    x1, y1 = x0 + 0.6 * (x1 - x0), y0 + 0.5 * (y1 - y0)
    p.rect(x0, y0, x1, y1, 0.4)  # frame
    p.rect(x0 + 4, y0 + 4, x1 - 4, y1 - 4, 1.2)
    p.poly([(x0 + 4, y1 - 4), ((x0 + x1) / 2, y0 + 8), (x1 - 4, y1 - 4)], 0.7)  # a mountain


def _bookshelf(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    x1 = x0 + 0.6 * (x1 - x0)
    p.rect(x0, y0, x1, y1, 0.6)
    n = 4
    for k in range(n):
        ya = y0 + k * (y1 - y0) / n
        p.line(x0, ya, x1, ya, 0.35, 2)
        bx = x0 + 3
        while bx < x1 - 6:  # books
            bw = float(p.rng.uniform(3, 7))
            p.rect(bx, ya + 4, bx + bw - 1, ya + (y1 - y0) / n, float(p.rng.uniform(0.8, 1.6)))
            bx += bw


def _cabinet(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    y0 = y0 + 0.3 * (y1 - y0)
    p.rect(x0, y0, x1, y1)
    xm = (x0 + x1) / 2
    p.line(xm, y0, xm, y1, 0.5, 2)
    p.rect(xm - 6, (y0 + y1) / 2, xm - 4, (y0 + y1) / 2 + 8, 0.3)
    p.rect(xm + 4, (y0 + y1) / 2, xm + 6, (y0 + y1) / 2 + 8, 0.3)


def _counter(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    x0, x1 = 0.0, float(s)  # counters run across the view
    top = y0 + 0.4 * (y1 - y0)
    p.rect(x0, top, x1, top + 0.1 * (y1 - y0), 1.3)
    p.rect(x0, top + 0.1 * (y1 - y0), x1, y1, 0.7)


def _refrigerator(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    x1 = x0 + 0.55 * (x1 - x0)
    p.rect(x0, y0, x1, y1, 1.2)
    ym = y0 + 0.35 * (y1 - y0)
    p.line(x0, ym, x1, ym, 0.5, 2)
    hx = x1 - 6 if not flip else x0 + 4
    p.rect(hx, y0 + 6, hx + 2, ym - 6, 0.3)
    p.rect(hx, ym + 6, hx + 2, ym + 30, 0.3)


def _toilet(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    p.rect(x0 + 0.1 * w, y0, x1 - 0.1 * w, y0 + 0.35 * h, 1.1)  # tank
    p.ellipse(x0, y0 + 0.3 * h, x1, y0 + 0.65 * h)  # bowl
    p.poly([(x0 + 0.25 * w, y0 + 0.55 * h), (x1 - 0.25 * w, y0 + 0.55 * h), (x1 - 0.3 * w, y1), (x0 + 0.3 * w, y1)], 0.9)


def _sink(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    p.ellipse(x0, y0 + 0.2 * h, x1, y0 + 0.55 * h)  # basin
    p.rect(x0 + 0.4 * w, y0 + 0.45 * h, x1 - 0.4 * w, y1, 0.8)  # pedestal
    p.rect(x0 + 0.46 * w, y0, x0 + 0.54 * w, y0 + 0.25 * h, 0.5)  # tap


def _bathtub(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    h = y1 - y0
    p.poly([(x0, y0 + 0.4 * h), (x1, y0 + 0.4 * h), (x1 - 0.05 * (x1 - x0), y1), (x0 + 0.05 * (x1 - x0), y1)])
    p.ellipse(x0 + 4, y0 + 0.33 * h, x1 - 4, y0 + 0.5 * h, 0.7)  # rim opening


def _curtain(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    y0 = 0.0
    folds = 6
    fw = (x1 - x0) / folds
    for k in range(folds):  # vertical folds alternate in shade
        p.rect(x0 + k * fw, y0, x0 + (k + 1) * fw, y1, 1.0 if k % 2 else 0.75)
    p.rect(x0 - 4, y0, x1 + 4, y0 + 4, 0.3, in_mask=False)  # rod is not curtain


def _shower_curtain(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    p.colour = tuple(int(0.5 * c + 110) for c in p.colour)  # pale, translucent-looking
    folds = 10
    fw = (x1 - x0) / folds
    for k in range(folds):
        p.rect(x0 + k * fw, y0, x0 + (k + 1) * fw, y1, 1.0 if k % 2 else 0.9)
    for k in range(folds + 1):
        p.ellipse(x0 + k * fw - 2, y0 - 2, x0 + k * fw + 2, y0 + 2, 0.3, in_mask=False)  # rings


def _plane(where: str) -> Callable[[_Pen, Box, int, bool], None]:
    """Walls, floors and ceilings fill a large part of the view in perspective."""

    def draw(p: _Pen, b: Box, s: int, flip: bool) -> None:
        x0, y0, x1, y1 = b
        a = x0 / 2
        if where == "floor":
            p.poly([(a, y0 + 0.3 * (y1 - y0)), (s - a, y0 + 0.3 * (y1 - y0)), (s, s), (0, s)])
        elif where == "ceiling":
            p.poly([(0, 0), (s, 0), (s - a, y1 - 0.5 * (y1 - y0)), (a, y1 - 0.5 * (y1 - y0))], 1.2)
        else:  # wall: a quad receding to one side
            near, far = (0.0, 0.8 * s) if flip else (0.2 * s, float(s))
            p.poly([(near, 0.05 * s), (far, 0.15 * s), (far, 0.8 * s), (near, 0.95 * s)])

    return draw


def _generic_box(p: _Pen, b: Box, s: int, flip: bool) -> None:
    p.rect(*b)


def _generic_blob(p: _Pen, b: Box, s: int, flip: bool) -> None:
    p.ellipse(*b)


def _generic_tri(p: _Pen, b: Box, s: int, flip: bool) -> None:
    x0, y0, x1, y1 = b
    p.poly([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)])


_SHAPES: dict[str, Callable[[_Pen, Box, int, bool], None]] = {
    "chair": _chair,
    "table": _table,
    "desk": _desk,
    "bed": _bed,
    "sofa": _sofa,
    "door": _door,
    "window": _window,
    "picture": _picture,
    "bookshelf": _bookshelf,
    "cabinet": _cabinet,
    "counter": _counter,
    "refrigerator": _refrigerator,
    "toilet": _toilet,
    "sink": _sink,
    "bathtub": _bathtub,
    "curtain": _curtain,
    "shower curtain": _shower_curtain,
    "wall": _plane("wall"),
    "floor": _plane("floor"),
    "ceiling": _plane("ceiling"),
}
_GENERIC = (_generic_box, _generic_blob, _generic_tri)


def __getattr__(name: str):
    # The Stable Diffusion generator lives in diffusion.py (diffusers); import it only when asked for.
    if name == "StableDiffusionGenerator":
        from sas3d.capability.diffusion import StableDiffusionGenerator

        return StableDiffusionGenerator
    raise AttributeError(name)
