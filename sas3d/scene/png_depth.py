"""A fast path for the one image format fusion reads per frame: 16-bit greyscale PNG depth.

Fusion decodes every frame's depth once per pass. With PIL followed by the float conversion a
640x480 7-Scenes frame took 5.5 ms, of which zlib's inflate is 2.1 ms and the rest PIL's
unfiltering, byte swap and copies, then the conversion. Here the zlib stream is inflated by
libdeflate (the ``deflate`` package, 0.8 ms; the standard library's zlib where it is missing)
and one compiled pass undoes the PNG row filters (PNG spec, Sec. 9 "Filtering") and writes
float32 metres directly: 3.2 ms, the same values (``benchmarks/depth_decode.py``: 1.7x).

Only non-interlaced 16-bit greyscale PNGs take this path (what ScanNet, 7-Scenes and
Matterport store); :func:`decode_png_depth` returns None for anything else and the caller
uses PIL. Structure errors (truncated chunks, bad CRCs, a damaged stream, a bad filter
byte) raise ``ValueError`` with the reason; the caller names the file.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 1 << 28  # a header claiming more (16384 x 16384) is refused before anything is allocated
_KERNELS: dict = {}

try:  # libdeflate: about 3x zlib's inflate speed on these streams
    import deflate as _deflate
except ImportError:  # pragma: no cover - a dependency; the fallback is tested by switching it off
    _deflate = None


def _inflate(stream: bytes, size: int) -> bytes:
    """The zlib stream's ``size`` bytes (its Adler-32 checked by either library)."""
    if _deflate is not None:
        try:
            out = _deflate.zlib_decompress(stream, size)
        except _deflate.DeflateError as exc:
            raise ValueError(f"damaged image data ({exc})") from None
    else:
        try:
            out = zlib.decompress(stream, bufsize=size)
        except zlib.error as exc:
            raise ValueError(f"damaged image data ({exc})") from None
    if len(out) != size:
        raise ValueError(f"image data holds {len(out)} bytes, expected {size}")
    return out


def _chunks(data: bytes):
    """(type, payload) of each chunk after the 8-byte signature, CRCs checked; stops after IEND."""
    pos = 8
    while True:
        if pos + 8 > len(data):
            raise ValueError("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"truncated PNG ({kind.decode('latin-1')} chunk cut short)")
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(data[pos + 4:end]) != crc:
            raise ValueError(f"PNG {kind.decode('latin-1')} chunk fails its CRC")
        yield kind, data[pos + 8:end]
        if kind == b"IEND":
            return
        pos = end + 4


def decode_png_depth(data: bytes, scale: float, invalid: tuple[int, int]) -> np.ndarray | None:
    """(H, W) float32 ``raw / scale`` of a 16-bit greyscale PNG's bytes, 0 where raw is in ``invalid``.

    The same float32 values as PIL's decode followed by ``raw.astype(float32) / float32(scale)``.
    None when the image is not a non-interlaced 16-bit greyscale PNG or ``scale`` is not a
    positive finite number (the caller falls back to PIL).
    """
    if data[:8] != PNG_SIGNATURE or not (0 < scale < np.inf):
        return None
    width = height = 0
    stream = []
    for kind, payload in _chunks(data):
        if kind == b"IHDR":
            if len(payload) != 13:
                raise ValueError("PNG IHDR chunk has the wrong length")
            width, height, bit_depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", payload)
            if (bit_depth, colour, compression, filtering, interlace) != (16, 0, 0, 0, 0):
                return None  # another layout: PIL decodes it
            if width == 0 or height == 0:
                raise ValueError("PNG has zero width or height")
            if width * height > MAX_PIXELS:
                raise ValueError(f"PNG claims {width}x{height} pixels, more than {MAX_PIXELS} (not a depth image)")
        elif kind == b"IDAT":
            if width == 0:
                raise ValueError("PNG image data before its IHDR chunk")
            stream.append(payload)
    if not stream:
        raise ValueError("PNG has no image data")
    filtered = np.frombuffer(_inflate(b"".join(stream), height * (1 + 2 * width)), dtype=np.uint8)
    depth = np.empty((height, width), dtype=np.float32)
    bad_row = _unfilter_kernel()(filtered, width, height, np.float32(scale), invalid[0], invalid[1], depth)
    if bad_row >= 0:
        raise ValueError(f"PNG row {bad_row} has an unknown filter type {int(filtered[bad_row * (1 + 2 * width)])}")
    return depth


def _unfilter_kernel():
    """``unfilter(filtered, width, height, scale, invalid, out) -> first bad row or -1``.

    Undoes the five PNG filters (None, Sub, Up, Average, Paeth; PNG spec Sec. 9.2-9.4) on rows of
    ``2 * width`` bytes with 2 bytes per pixel, keeping the previous row's bytes, and writes each
    big-endian sample's ``float32(raw) / scale`` (0 where ``invalid[raw]``) to ``out``.
    """
    if "unfilter" not in _KERNELS:
        import numba

        @numba.njit(cache=True, nogil=True)
        def unfilter(filtered, width, height, scale, invalid_a, invalid_b, out):  # pragma: no cover - compiled
            # Bytes of a row: cur[2x] (high) and cur[2x + 1] (low) of pixel x. Sub, Average and Paeth
            # read the byte two before (the same lane of the pixel to the left), so the two lanes are
            # independent chains, carried in registers; Paeth's choice is written as selects.
            stride = 2 * width
            prev = np.zeros(stride, dtype=np.int32)
            cur = np.zeros(stride, dtype=np.int32)
            for y in range(height):
                base = y * (stride + 1) + 1
                kind = filtered[base - 1]
                if kind == 0:
                    for i in range(stride):
                        cur[i] = filtered[base + i]
                elif kind == 2:
                    for i in range(stride):
                        cur[i] = (filtered[base + i] + prev[i]) & 255
                elif kind == 1:
                    hi = 0
                    lo = 0
                    for x in range(width):
                        hi = (filtered[base + 2 * x] + hi) & 255
                        lo = (filtered[base + 2 * x + 1] + lo) & 255
                        cur[2 * x] = hi
                        cur[2 * x + 1] = lo
                elif kind == 3:
                    hi = 0
                    lo = 0
                    for x in range(width):
                        hi = (filtered[base + 2 * x] + ((hi + prev[2 * x]) >> 1)) & 255
                        lo = (filtered[base + 2 * x + 1] + ((lo + prev[2 * x + 1]) >> 1)) & 255
                        cur[2 * x] = hi
                        cur[2 * x + 1] = lo
                elif kind == 4:
                    a_hi = 0
                    a_lo = 0
                    c_hi = 0
                    c_lo = 0
                    for x in range(width):
                        b_hi = prev[2 * x]
                        b_lo = prev[2 * x + 1]
                        pa = abs(b_hi - c_hi)
                        pb = abs(a_hi - c_hi)
                        pc = abs(a_hi + b_hi - 2 * c_hi)
                        bc = b_hi if pb <= pc else c_hi
                        a_hi = (filtered[base + 2 * x] + (a_hi if (pa <= pb) & (pa <= pc) else bc)) & 255
                        pa = abs(b_lo - c_lo)
                        pb = abs(a_lo - c_lo)
                        pc = abs(a_lo + b_lo - 2 * c_lo)
                        bc = b_lo if pb <= pc else c_lo
                        a_lo = (filtered[base + 2 * x + 1] + (a_lo if (pa <= pb) & (pa <= pc) else bc)) & 255
                        cur[2 * x] = a_hi
                        cur[2 * x + 1] = a_lo
                        c_hi = b_hi
                        c_lo = b_lo
                else:
                    return y
                for x in range(width):
                    raw = (cur[2 * x] << 8) | cur[2 * x + 1]
                    value = np.float32(raw) / scale
                    out[y, x] = np.float32(0.0) if (raw == invalid_a) | (raw == invalid_b) else value
                prev, cur = cur, prev
            return -1

        _KERNELS["unfilter"] = unfilter
    return _KERNELS["unfilter"]
