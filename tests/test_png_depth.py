"""The fast 16-bit PNG depth decoder against PIL (the reference decoder) on PNGs written here by a
brute-force encoder with each of the five row filters forced, and on the real 7-Scenes frames."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sas3d.errors import InputError
from sas3d.scene.images import INVALID_RAW_DEPTH, read_depth
from sas3d.scene.png_depth import decode_png_depth
from sas3d.scene.types import Frame

SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes_redkitchen"


def _paeth(a: int, b: int, c: int) -> int:  # PNG spec Sec. 9.4, written out
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(kind: int, line: bytes, prev: bytes, bpp: int = 2) -> bytes:
    """Byte-by-byte PNG filtering of one row (the encoder's side of Sec. 9.2)."""
    out = bytearray(len(line))
    for i, x in enumerate(line):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out[i] = (x - pred) % 256
    return bytes(out)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png16(raw: np.ndarray, filters, idat_pieces: int = 1, bit_depth: int = 16, colour: int = 0, interlace: int = 0) -> bytes:
    """A 16-bit greyscale PNG of ``raw`` (uint16), row y filtered with ``filters[y % len(filters)]``."""
    h, w = raw.shape
    rows = raw.astype(">u2").tobytes()
    stride = 2 * w
    prev = bytes(stride)
    body = bytearray()
    for y in range(h):
        line = rows[y * stride:(y + 1) * stride]
        kind = filters[y % len(filters)]
        body += bytes([kind]) + _filter_row(kind, line, prev)
        prev = line
    stream = zlib.compress(bytes(body), 6)
    cut = np.linspace(0, len(stream), idat_pieces + 1).astype(int)
    header = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + b"".join(_chunk(b"IDAT", stream[cut[i]:cut[i + 1]]) for i in range(idat_pieces)) + _chunk(b"IEND", b""))


def _pil_depth(path: Path, scale: float) -> np.ndarray:
    with Image.open(path) as im:
        raw = np.asarray(im)
    depth = raw.astype(np.float32) / np.float32(scale)
    depth[np.isin(raw, INVALID_RAW_DEPTH)] = 0.0
    return depth


def _frame(path: Path, w: int, h: int, scale: float = 1000.0) -> Frame:
    k = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1.0]])
    return Frame(path.with_suffix(".jpg"), k, np.eye(4), w, h, path, depth_scale=scale)


def _random_depth(rng, h: int, w: int) -> np.ndarray:
    """Smooth depth (what the predictors see in sensors) plus noise, holes and saturated pixels."""
    y, x = np.mgrid[0:h, 0:w]
    raw = 1500 + 40 * x + 25 * y + rng.integers(-300, 300, (h, w))
    raw = np.clip(raw, 1, 65534).astype(np.uint16)
    raw[rng.random((h, w)) < 0.1] = 0
    raw[rng.random((h, w)) < 0.05] = 65535
    raw[rng.random((h, w)) < 0.05] = rng.integers(1, 65535, 1)[0]
    return raw


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 1, 0, 3, 2, 4, 4]])
def test_each_png_filter_decodes_to_pils_values(tmp_path, filters):
    rng = np.random.default_rng(len(filters) * 10 + filters[0])
    raw = _random_depth(rng, 13, 17)
    raw[0, 0], raw[0, 1], raw[1, 0] = 65534, 1, 255  # byte carries across both lanes
    path = tmp_path / "d.png"
    path.write_bytes(encode_png16(raw, filters, idat_pieces=3))
    for scale in (1000.0, 4000.0, 0.37):
        ours = read_depth(_frame(path, 17, 13, scale))
        ref = _pil_depth(path, scale)
        assert ours.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
        expected = raw.astype(np.float32) / np.float32(scale)  # and the formula itself
        expected[(raw == 0) | (raw == 65535)] = 0
        assert np.array_equal(ours, expected)


@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 9), (7, 3)])
def test_full_range_values_and_thin_images_decode_to_pils_values(tmp_path, shape):
    """Uniform random 16-bit values (every byte pattern, so every filter wraps around) on images one
    pixel wide or high, where Sub / Average / Paeth have no left neighbour or no row above."""
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    for filters in ([0], [1], [2], [3], [4], [3, 4, 1, 2, 0]):
        raw = rng.integers(0, 65536, shape, dtype=np.uint16)
        path = tmp_path / f"d{filters[0]}{len(filters)}.png"
        path.write_bytes(encode_png16(raw, filters))
        ours = read_depth(_frame(path, shape[1], shape[0]))
        assert np.array_equal(ours.view(np.uint32), _pil_depth(path, 1000.0).view(np.uint32)), filters


def test_other_png_layouts_fall_back_to_pil(tmp_path):
    """8-bit, colour or interlaced PNGs are not the fast path's format: None, and read_depth still reads them."""
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4) * 3
    path = tmp_path / "d8.png"
    Image.fromarray(raw.astype(np.uint8)).save(path)
    assert decode_png_depth(path.read_bytes(), 1000.0, INVALID_RAW_DEPTH) is None
    assert np.array_equal(read_depth(_frame(path, 4, 3)), _pil_depth(path, 1000.0))
    interlaced = encode_png16(raw, [0], interlace=1)  # header says Adam7: not ours to decode
    assert decode_png_depth(interlaced, 1000.0, INVALID_RAW_DEPTH) is None
    good = encode_png16(raw, [0])
    assert decode_png_depth(good, 0.0, INVALID_RAW_DEPTH) is None  # no valid scale: the caller decides
    assert decode_png_depth(b"not a png", 1000.0, INVALID_RAW_DEPTH) is None


def _corrupt_cases(raw: np.ndarray) -> dict[str, tuple[bytes, str]]:
    good = encode_png16(raw, [4])
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 10] ^= 0x55  # inside the IDAT payload: its CRC no longer matches
    body = bytes([5]) + bytes(2 * raw.shape[1])  # filter type 5 does not exist
    header = struct.pack(">IIBBBBB", raw.shape[1], 1, 16, 0, 0, 0, 0)
    bad_filter = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b""))
    stream = zlib.compress(b"\x00" * 5)  # too few bytes for the image
    short = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b""))
    damaged = bytearray(zlib.compress(body))
    damaged[-5] ^= 0xFF  # the stream's Adler-32 (or its last block) is wrong
    bad_stream = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", bytes(damaged)) + _chunk(b"IEND", b""))
    return {
        "truncated": (good[: len(good) - 30], "truncated"),
        "crc": (bytes(flipped), "CRC"),
        "filter": (bad_filter, "filter type 5"),
        "short": (short, "expected"),
        "stream": (bad_stream, "damaged"),
        "no_end": (good[: good.index(b"IEND") - 4], "IEND"),
        "huge": (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1 << 20, 1 << 20, 16, 0, 0, 0, 0))
                 + _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b""), "1048576x1048576"),
    }


@pytest.mark.parametrize("case", ["truncated", "crc", "filter", "short", "stream", "no_end", "huge"])
def test_a_corrupt_png_is_an_input_error_naming_the_file(tmp_path, case):
    raw = _random_depth(np.random.default_rng(3), 5, 6)
    data, reason = _corrupt_cases(raw)[case]
    path = tmp_path / f"{case}.depth.png"
    path.write_bytes(data)
    h = 1 if case in ("filter", "short", "stream") else 5
    with pytest.raises(InputError) as err:
        read_depth(_frame(path, 6, h))
    assert str(path) in str(err.value) and reason in str(err.value), str(err.value)


def test_wrong_size_names_both_sizes(tmp_path):
    path = tmp_path / "d.png"
    path.write_bytes(encode_png16(_random_depth(np.random.default_rng(0), 4, 6), [1]))
    with pytest.raises(InputError) as err:
        read_depth(_frame(path, 5, 4))
    assert "6x4" in str(err.value) and "5x4" in str(err.value) and str(path) in str(err.value)


@pytest.mark.skipif(not SEVEN_SCENES.is_dir(), reason="../shared/data/7scenes_redkitchen not present")
def test_real_7scenes_depth_equals_pils_decode():
    files = sorted(SEVEN_SCENES.glob("*.depth.png"))[::10]
    assert files
    for path in files:
        ours = read_depth(_frame(path, 640, 480))
        assert np.array_equal(ours.view(np.uint32), _pil_depth(path, 1000.0).view(np.uint32)), path


def test_the_standard_librarys_zlib_gives_the_same_values(tmp_path, monkeypatch):
    """Where the libdeflate package is missing, zlib inflates the stream: the same result."""
    from sas3d.scene import png_depth

    raw = _random_depth(np.random.default_rng(5), 9, 11)
    data = encode_png16(raw, [4, 3, 1], idat_pieces=2)
    fast = decode_png_depth(data, 1000.0, INVALID_RAW_DEPTH)
    monkeypatch.setattr(png_depth, "_deflate", None)
    slow = decode_png_depth(data, 1000.0, INVALID_RAW_DEPTH)
    assert np.array_equal(fast.view(np.uint32), slow.view(np.uint32))
    with pytest.raises(ValueError, match="damaged"):
        decode_png_depth(_corrupt_cases(raw)["stream"][0], 1000.0, INVALID_RAW_DEPTH)
