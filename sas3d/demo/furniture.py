"""Furniture of the generated rooms: one builder per object, each adding labelled, coloured mesh parts
to a room builder (``sas3d.demo.rooms._Builder``), plus the colour palettes they draw from."""

from __future__ import annotations

import math

import numpy as np

from sas3d.demo.labels import L, PROP


def _col(rng: np.random.Generator, palette: list[tuple[int, int, int]], jitter: float = 12.0) -> np.ndarray:
    """A palette colour with a random per-object shift."""
    c = np.asarray(palette[rng.integers(len(palette))], dtype=np.float32)
    return np.clip(c + rng.normal(0, jitter, 3), 0, 255)


WOODS = [(150, 105, 65), (120, 80, 50), (185, 145, 100), (95, 65, 45), (205, 175, 135)]
FABRICS = [(70, 90, 140), (140, 60, 60), (90, 120, 80), (160, 150, 130), (60, 60, 65), (180, 120, 70), (110, 80, 120)]
WHITES = [(235, 235, 230), (220, 222, 225), (245, 240, 228)]
METALS = [(160, 165, 170), (90, 95, 100), (200, 200, 205)]
WALLS = [(225, 220, 205), (210, 220, 225), (230, 215, 200), (200, 210, 190), (235, 235, 235)]
FLOORS = [(150, 110, 75), (120, 95, 70), (170, 160, 150), (100, 100, 110), (190, 170, 140)]

# ----------------------------------------------------------------------------------------------
# Furniture (object frame: footprint centred at the origin, width along x, depth along y,
# back at +y against a wall, front at -y). Each takes (builder, rng, w, d) and builds at frame.


def _legs(b, rng, w, d, h, color, label, inset=0.04, t=0.04, round_=False):
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (w / 2 - inset - t / 2), sy * (d / 2 - inset - t / 2)
            if round_:
                b.cylinder(cx, cy, 0.0, t / 2, h, color, label, top=False)
            else:
                b.box((cx - t / 2, cy - t / 2, 0), (cx + t / 2, cy + t / 2, h), color, label)


def chair(b, rng, w, d):
    c_frame, c_seat = _col(rng, WOODS + METALS), _col(rng, FABRICS + WOODS)
    seat_h = rng.uniform(0.42, 0.48)
    if rng.random() < 0.35:  # office chair: column + star base
        b.cylinder(0, 0, 0.04, 0.28, 0.03, c_frame, L["chair"])
        for k in range(5):  # castors
            a = 2 * math.pi * k / 5
            b.cylinder(0.27 * math.cos(a), 0.27 * math.sin(a), 0.0, 0.025, 0.04, (40, 40, 40), L["chair"])
        b.cylinder(0, 0, 0.05, 0.03, seat_h - 0.1, c_frame, L["chair"])
    else:
        _legs(b, rng, w, d, seat_h - 0.04, c_frame, L["chair"], inset=0.02, t=0.035, round_=rng.random() < 0.5)
    b.box((-w / 2, -d / 2, seat_h - 0.05), (w / 2, d / 2, seat_h), c_seat, L["chair"], bottom=True)
    back_h = seat_h + rng.uniform(0.35, 0.5)
    b.box((-w / 2, d / 2 - 0.05, seat_h), (w / 2, d / 2, back_h), c_seat, L["chair"])


def table(b, rng, w, d, height=None):
    c = _col(rng, WOODS + WHITES + METALS)
    h = height or rng.uniform(0.72, 0.77)
    if rng.random() < 0.3 and abs(w - d) < 0.2:  # round pedestal table
        r = min(w, d) / 2
        b.cylinder(0, 0, h - 0.04, r, 0.04, c, L["table"], bottom=True)
        b.cylinder(0, 0, 0.03, 0.05, h - 0.07, c, L["table"], top=False)
        b.cylinder(0, 0, 0.0, r * 0.5, 0.03, c, L["table"])
    else:
        b.box((-w / 2, -d / 2, h - 0.04), (w / 2, d / 2, h), c, L["table"], bottom=True)
        _legs(b, rng, w, d, h - 0.04, c, L["table"], round_=rng.random() < 0.4, t=0.05)


def coffee_table(b, rng, w, d):
    table(b, rng, w, d, height=rng.uniform(0.4, 0.48))


def desk(b, rng, w, d):
    c = _col(rng, WOODS + WHITES)
    h = rng.uniform(0.72, 0.76)
    b.box((-w / 2, -d / 2, h - 0.03), (w / 2, d / 2, h), c, L["desk"], bottom=True)
    b.box((-w / 2, -d / 2 + 0.05, 0), (-w / 2 + 0.03, d / 2, h - 0.03), c, L["desk"])  # side panels
    if rng.random() < 0.6:  # drawer unit on the right
        b.box((w / 2 - 0.42, -d / 2 + 0.03, 0), (w / 2, d / 2, h - 0.03), c, L["desk"])
        for k in range(3):
            z = 0.05 + k * (h - 0.1) / 3
            b.box((w / 2 - 0.38, -d / 2, z + 0.02), (w / 2 - 0.04, -d / 2 + 0.03, z + (h - 0.1) / 3 - 0.02),
                  c * 0.85, L["desk"])
    else:
        b.box((w / 2 - 0.03, -d / 2 + 0.05, 0), (w / 2, d / 2, h - 0.03), c, L["desk"])
    if rng.random() < 0.7:  # a monitor: not a ScanNet20 class
        b.box((-0.28, d / 2 - 0.2, h + 0.12), (0.28, d / 2 - 0.17, h + 0.45), (30, 30, 35), PROP)
        b.box((-0.03, d / 2 - 0.17, h), (0.03, d / 2 - 0.14, h + 0.12), (60, 60, 60), PROP)


def sofa(b, rng, w, d):
    c = _col(rng, FABRICS)
    seat = rng.uniform(0.38, 0.45)
    b.box((-w / 2, -d / 2, 0.08), (w / 2, d / 2, seat - 0.1), c * 0.9, L["sofa"])
    _legs(b, rng, w, d, 0.08, (50, 40, 30), L["sofa"], inset=0.05, t=0.04)
    arm = 0.18
    n_cushions = 2 if w < 1.6 else 3
    cw = (w - 2 * arm) / n_cushions
    for k in range(n_cushions):
        x0 = -w / 2 + arm + k * cw
        b.box((x0 + 0.005, -d / 2 + 0.02, seat - 0.1), (x0 + cw - 0.005, d / 2 - 0.2, seat), c, L["sofa"])
    b.box((-w / 2, d / 2 - 0.2, 0.08), (w / 2, d / 2, seat + rng.uniform(0.35, 0.5)), c, L["sofa"])
    for sx in (-1, 1):
        x0 = -w / 2 if sx < 0 else w / 2 - arm
        b.box((x0, -d / 2, 0.08), (x0 + arm, d / 2 - 0.2, seat + 0.18), c, L["sofa"])


def bed(b, rng, w, d):
    c_frame, c_sheet, c_blanket = _col(rng, WOODS), _col(rng, WHITES, 5), _col(rng, FABRICS)
    b.box((-w / 2, -d / 2, 0), (w / 2, d / 2, 0.3), c_frame, L["bed"])
    b.box((-w / 2 + 0.03, -d / 2 + 0.03, 0.3), (w / 2 - 0.03, d / 2 - 0.05, 0.5), c_sheet, L["bed"])
    b.box((-w / 2 + 0.02, -d / 2 + 0.02, 0.5), (w / 2 - 0.02, d / 2 * 0.35, 0.53), c_blanket, L["bed"])
    b.box((-w / 2, d / 2 - 0.06, 0), (w / 2, d / 2, rng.uniform(0.9, 1.2)), c_frame, L["bed"])  # headboard
    n_pillows = 1 if w < 1.2 else 2
    pw = (w - 0.2) / n_pillows
    for k in range(n_pillows):
        x0 = -w / 2 + 0.1 + k * pw
        b.box((x0 + 0.03, d / 2 - 0.45, 0.5), (x0 + pw - 0.03, d / 2 - 0.1, 0.62), c_sheet, L["bed"])


def cabinet(b, rng, w, d, height=None):
    c = _col(rng, WOODS + WHITES)
    h = height or rng.uniform(0.5, 2.0)
    b.box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), c, L["cabinet"])
    n_doors = max(1, round(w / 0.45))
    dw = w / n_doors
    for k in range(n_doors):
        x0 = -w / 2 + k * dw
        b.box((x0 + 0.01, -d / 2 - 0.015, 0.05), (x0 + dw - 0.01, -d / 2, h - 0.03), c * 0.92, L["cabinet"])
        kx = x0 + (dw - 0.06 if k % 2 == 0 else 0.06)
        b.box((kx - 0.01, -d / 2 - 0.04, h / 2 - 0.06), (kx + 0.01, -d / 2 - 0.015, h / 2 + 0.06), METALS[0], L["cabinet"])


def nightstand(b, rng, w, d):
    cabinet(b, rng, w, d, height=rng.uniform(0.45, 0.6))


def wardrobe(b, rng, w, d):
    cabinet(b, rng, w, d, height=rng.uniform(1.8, 2.1))


def bookshelf(b, rng, w, d):
    c = _col(rng, WOODS + WHITES)
    h = rng.uniform(1.2, 2.0)
    t = 0.025
    b.box((-w / 2, -d / 2, 0), (-w / 2 + t, d / 2, h), c, L["bookshelf"])
    b.box((w / 2 - t, -d / 2, 0), (w / 2, d / 2, h), c, L["bookshelf"])
    b.box((-w / 2, d / 2 - t, 0), (w / 2, d / 2, h), c * 0.9, L["bookshelf"])
    n_shelves = max(2, int(h / 0.36))
    for k in range(n_shelves + 1):
        z = min(k * h / n_shelves, h - t)
        b.box((-w / 2 + t, -d / 2, z), (w / 2 - t, d / 2 - t, z + t), c, L["bookshelf"])
        if k == n_shelves:
            break
        x = -w / 2 + t + 0.01  # books standing on the board, labelled with the shelf as ScanNet annotators mostly do
        while x < w / 2 - t - 0.1 and rng.random() < 0.93:
            bw, bh = rng.uniform(0.02, 0.06), rng.uniform(0.15, min(0.3, h / n_shelves - 0.05))
            b.box((x, -d / 2 + 0.03, z + t), (x + bw, d / 2 - t - 0.01, z + t + bh), _col(rng, FABRICS, 30),
                  L["bookshelf"], noise=3.0)
            x += bw + rng.uniform(0.0, 0.03)


def kitchen_counter(b, rng, w, d, with_sink=True):
    """Base cabinets, a counter top and (optionally) a sink on it."""
    c_cab, c_top = _col(rng, WOODS + WHITES), _col(rng, [(60, 60, 60), (200, 195, 185), (120, 110, 100)])
    h = 0.9
    b.box((-w / 2, -d / 2 + 0.05, 0), (w / 2, d / 2, h - 0.04), c_cab, L["cabinet"])
    n_doors = max(1, round(w / 0.5))
    for k in range(n_doors):
        x0 = -w / 2 + k * w / n_doors
        b.box((x0 + 0.01, -d / 2 + 0.035, 0.1), (x0 + w / n_doors - 0.01, -d / 2 + 0.05, h - 0.08), c_cab * 0.9, L["cabinet"])
    b.box((-w / 2, -d / 2, h - 0.04), (w / 2, d / 2, h), c_top, L["counter"], bottom=True)
    if with_sink:
        _sink(b, rng, rng.uniform(-w / 2 + 0.4, w / 2 - 0.4), 0.0, h, min(0.6, w - 0.2), min(0.45, d - 0.1))


def _sink(b, rng, x, y, z, sw, sd):
    c = _col(rng, WHITES + METALS, 5)
    t, rim = 0.03, 0.04
    b.box((x - sw / 2, y - sd / 2, z), (x + sw / 2, y - sd / 2 + t, z + rim), c, L["sink"])
    b.box((x - sw / 2, y + sd / 2 - t, z), (x + sw / 2, y + sd / 2, z + rim), c, L["sink"])
    b.box((x - sw / 2, y - sd / 2 + t, z), (x - sw / 2 + t, y + sd / 2 - t, z + rim), c, L["sink"])
    b.box((x + sw / 2 - t, y - sd / 2 + t, z), (x + sw / 2, y + sd / 2 - t, z + rim), c, L["sink"])
    b.quad((x - sw / 2 + t, y - sd / 2 + t, z + 0.005), (sw - 2 * t, 0, 0), (0, sd - 2 * t, 0), c * 0.85, L["sink"])
    b.cylinder(x, y + sd / 2 + 0.03, z, 0.02, 0.25, METALS[2], L["sink"])  # faucet
    b.box((x - 0.015, y + sd / 2 - 0.12, z + 0.22), (x + 0.015, y + sd / 2 + 0.03, z + 0.25), METALS[2], L["sink"])


def vanity(b, rng, w, d):
    """Bathroom vanity: cabinet body, counter top, sink."""
    kitchen_counter(b, rng, w, d, with_sink=False)
    _sink(b, rng, 0.0, 0.0, 0.9, min(0.5, w - 0.15), min(0.38, d - 0.1))


def refrigerator(b, rng, w, d):
    c = _col(rng, WHITES + METALS, 6)
    h = rng.uniform(1.7, 1.95)
    b.box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), c, L["refrigerator"])
    split = h * rng.uniform(0.3, 0.4)
    b.box((-w / 2 + 0.01, -d / 2 - 0.01, 0.02), (w / 2 - 0.01, -d / 2, split - 0.01), c * 0.96, L["refrigerator"])
    b.box((-w / 2 + 0.01, -d / 2 - 0.01, split + 0.01), (w / 2 - 0.01, -d / 2, h - 0.02), c * 0.96, L["refrigerator"])
    for z0, z1 in ((split - 0.35, split - 0.05), (split + 0.08, split + 0.5)):
        b.box((w / 2 - 0.08, -d / 2 - 0.05, z0), (w / 2 - 0.05, -d / 2 - 0.01, z1), METALS[1], L["refrigerator"])


def toilet(b, rng, w, d):
    c = _col(rng, WHITES, 4)
    b.cylinder(0, -0.08, 0.0, 0.14, 0.3, c, L["toilet"], top=False)
    b.cylinder(0, -0.1, 0.3, 0.19, 0.08, c, L["toilet"])
    b.cylinder(0, -0.1, 0.38, 0.2, 0.02, c * 0.97, L["toilet"])  # seat
    b.box((-0.2, d / 2 - 0.2, 0.35), (0.2, d / 2, 0.78), c, L["toilet"])  # tank
    b.box((-0.12, d / 2 - 0.3, 0.0), (0.12, d / 2 - 0.2, 0.38), c, L["toilet"])


def bathtub(b, rng, w, d):
    """Tub against the wall along its long side; the shower curtain hangs along the open front edge."""
    c = _col(rng, WHITES, 4)
    h, t = rng.uniform(0.5, 0.6), 0.08
    b.box((-w / 2, -d / 2, 0), (w / 2, -d / 2 + t, h), c, L["bathtub"])
    b.box((-w / 2, d / 2 - t, 0), (w / 2, d / 2, h), c, L["bathtub"])
    b.box((-w / 2, -d / 2 + t, 0), (-w / 2 + t, d / 2 - t, h), c, L["bathtub"])
    b.box((w / 2 - t, -d / 2 + t, 0), (w / 2, d / 2 - t, h), c, L["bathtub"])
    b.box((-w / 2 + t, -d / 2 + t, 0), (w / 2 - t, d / 2 - t, 0.12), c * 0.95, L["bathtub"])
    frac = rng.uniform(0.4, 0.75)
    x0 = -w / 2 + 0.02 if rng.random() < 0.5 else w / 2 - 0.02 - frac * w
    b.box((-w / 2, -d / 2 + 0.04, 2.0), (w / 2, -d / 2 + 0.06, 2.02), METALS[0], PROP)  # curtain rod
    b.sheet(x0, x0 + frac * w, -d / 2 + 0.05, h + 0.1, 1.98, _col(rng, FABRICS + WHITES, 20), L["shower curtain"],
            folds=frac * w / 0.15, depth=0.03)


def shelf_unit(b, rng, w, d):
    """Misc furniture (ScanNet 'otherfurniture'): an open metal rack, a stool, or a crate."""
    kind = rng.integers(3)
    c = _col(rng, METALS + WOODS)
    if kind == 0:
        h = rng.uniform(0.8, 1.5)
        _legs(b, rng, w, d, h, c, L["otherfurniture"], inset=0.0, t=0.03)
        for z in np.linspace(0.1, h - 0.02, 3):
            b.box((-w / 2, -d / 2, z), (w / 2, d / 2, z + 0.02), c, L["otherfurniture"])
    elif kind == 1:
        b.cylinder(0, 0, 0.0, min(w, d) / 2 * 0.9, rng.uniform(0.4, 0.65), c, L["otherfurniture"])
    else:
        b.box((-w / 2, -d / 2, 0), (w / 2, d / 2, rng.uniform(0.3, 0.7)), c, L["otherfurniture"])


# Wall-mounted items (frame: x along the wall, y = distance into the room, z up).


def door(b, rng, x0, width):
    c = _col(rng, WOODS + WHITES)
    b.box((x0 - 0.05, 0.0, 0.0), (x0 + width + 0.05, 0.02, 2.12), c * 0.9, L["door"])  # frame
    b.box((x0, 0.02, 0.0), (x0 + width, 0.05, 2.05), c, L["door"])
    hx = x0 + width - 0.1
    b.box((hx - 0.06, 0.05, 1.0), (hx + 0.02, 0.1, 1.03), METALS[0], L["door"])


def window(b, rng, x0, width, z0, height):
    c_frame, c_glass = _col(rng, WHITES + WOODS, 6), np.array([170, 200, 225]) + rng.normal(0, 8, 3)
    t = 0.05
    b.box((x0, 0.0, z0), (x0 + width, 0.06, z0 + t), c_frame, L["window"])
    b.box((x0, 0.0, z0 + height - t), (x0 + width, 0.06, z0 + height), c_frame, L["window"])
    b.box((x0, 0.0, z0 + t), (x0 + t, 0.06, z0 + height - t), c_frame, L["window"])
    b.box((x0 + width - t, 0.0, z0 + t), (x0 + width, 0.06, z0 + height - t), c_frame, L["window"])
    b.box((x0 + width / 2 - 0.02, 0.0, z0 + t), (x0 + width / 2 + 0.02, 0.05, z0 + height - t), c_frame, L["window"])
    b.quad((x0 + t, 0.02, z0 + t), (width - 2 * t, 0, 0), (0, 0, height - 2 * t), c_glass, L["window"],
           color_fn=lambda p: c_glass + 25 * np.sin(p[:, 2:3] * 3.0 + p[:, 0:1]))


def picture(b, rng, x0, width, z0, height):
    c_frame = _col(rng, WOODS + [(30, 30, 30), (200, 180, 80)])
    b.box((x0, 0.0, z0), (x0 + width, 0.03, z0 + height), c_frame, L["picture"])
    ca, cb = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    freq = rng.uniform(2, 8, 2)

    def painting(p):
        m = 0.5 + 0.5 * np.sin(freq[0] * p[:, 0:1] + freq[1] * p[:, 2:3] * 1.7 + p[:, 1:2])
        return ca * m + cb * (1 - m)

    b.quad((x0 + 0.03, 0.032, z0 + 0.03), (width - 0.06, 0, 0), (0, 0, height - 0.06), ca, L["picture"], color_fn=painting)


def curtains(b, rng, x0, width, top, bottom):
    c = _col(rng, FABRICS + WHITES, 20)
    side = max(0.3, width * rng.uniform(0.2, 0.35))
    for xa in (x0 - 0.15, x0 + width + 0.15 - side):
        b.begin_object()  # each panel is an instance
        b.sheet(xa, xa + side, 0.12, bottom, top, c, L["curtain"], folds=side / 0.12, depth=0.035)
    b.box((x0 - 0.2, 0.1, top), (x0 + width + 0.2, 0.14, top + 0.03), METALS[1], PROP)  # rod


# ----------------------------------------------------------------------------------------------
# Room layout
