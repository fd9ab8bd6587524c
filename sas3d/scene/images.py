"""Reading frame images: colour as uint8 RGB, depth as float32 metres (0 = invalid).

Depth is read lazily (one frame at a time) and checked against the frame's declared
resolution, because intrinsics are only valid at that resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.scene.types import Frame

# Raw depth values meaning "no measurement": 0 everywhere; 65535 in 7-Scenes (saturated/invalid).
INVALID_RAW_DEPTH = (0, 65535)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image, reading only its header."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise InputError(path, "image file not found") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"unreadable image ({exc})") from None


def read_color(path: str | Path) -> np.ndarray:
    """Read a colour image as (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(path, "colour image not found") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"unreadable colour image ({exc})") from None


def _read_raw_depth(path: Path, data: bytes | None = None) -> np.ndarray:
    """The file's raw depth array (``data``: its bytes, when already read)."""
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"unreadable depth array ({exc})") from None
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise InputError(path, "depth image not found") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"unreadable depth image ({exc})") from None


def _read_png_depth(path: Path, frame: Frame) -> tuple[np.ndarray | None, bytes]:
    """(metres, the file's bytes) for a 16-bit greyscale PNG through the fast decoder
    (:mod:`sas3d.scene.png_depth`); metres None for another PNG layout (PIL then reads the same bytes)."""
    from sas3d.scene.png_depth import decode_png_depth

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "depth image not found") from None
    except OSError as exc:
        raise InputError(path, f"unreadable depth image ({exc})") from None
    try:
        return decode_png_depth(data, float(frame.depth_scale), INVALID_RAW_DEPTH), data
    except ValueError as exc:
        raise InputError(path, f"unreadable depth image ({exc})") from None


def _raw_to_metres(raw: np.ndarray, frame: Frame, path: Path) -> np.ndarray:
    """Metres from a raw depth array: integer units / ``depth_scale`` with the invalid values 0; float
    units must be finite, negative becomes 0."""
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise InputError(path, f"depth contains {int((~np.isfinite(raw)).sum())} NaN/inf values")
        depth = raw.astype(np.float32) / np.float32(frame.depth_scale)
        depth[depth < 0] = 0.0
        return depth
    scale = np.float32(frame.depth_scale)
    depth = raw.astype(np.float32)
    np.divide(depth, scale, out=depth)
    for value in INVALID_RAW_DEPTH:
        if value == 0 and 0 < scale < np.inf:
            continue  # 0 / scale is already +0.0 (one pass less over every frame's depth: this runs per frame in fusion)
        depth[raw == value] = 0.0
    return depth


def read_depth(frame: Frame) -> np.ndarray:
    """Read ``frame.depth_path`` as (H, W) float32 metres; 0 where the sensor gave no value.

    Integer depth (PNG uint16) is divided by ``frame.depth_scale``; raw 0 and 65535 are invalid.
    Float depth (.npy / float TIFF) is taken as raw units too and must be finite.
    Raises InputError when the file is missing/unreadable, not 2-D, contains NaN/inf, or its
    size differs from the frame's ``width`` x ``height`` (the intrinsics' resolution).
    16-bit greyscale PNGs (ScanNet, 7-Scenes, Matterport) take a faster decoder with the same values.
    """
    if frame.depth_path is None:
        raise InputError(frame.color_path, "frame has no depth image")
    path = Path(frame.depth_path)
    depth, data = _read_png_depth(path, frame) if path.suffix.lower() == ".png" else (None, None)
    raw = _read_raw_depth(path, data) if depth is None else depth
    if raw.ndim != 2:
        raise InputError(path, f"depth must be a single-channel image, got shape {raw.shape}")
    if raw.shape != (frame.height, frame.width):
        raise InputError(
            path,
            f"depth is {raw.shape[1]}x{raw.shape[0]} but the frame's intrinsics are for {frame.width}x{frame.height}",
        )
    return depth if depth is not None else _raw_to_metres(raw, frame, path)
