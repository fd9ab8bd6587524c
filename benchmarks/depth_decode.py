"""Benchmark: reading 16-bit depth PNGs, ``sas3d.scene.images.read_depth`` (libdeflate + one compiled
unfilter pass, :mod:`sas3d.scene.png_depth`) vs PIL's decode followed by the same float conversion.

Fusion decodes every frame's depth once per pass, so this is part of ``benchmarks/fusion.py``'s
time; here it is alone. Data: the real 7-Scenes redkitchen depth frames in ../shared/data
(640x480). The two readers alternate over ``--rounds`` rounds (this machine is noisy); the
medians are compared and every frame's values must be bit-identical.

    .venv/bin/python benchmarks/depth_decode.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "7scenes_redkitchen"


def pil_depth(frame) -> np.ndarray:
    """What ``read_depth`` did before the fast decoder: PIL's decode, then the float conversion."""
    from sas3d.scene.images import _raw_to_metres, _read_raw_depth

    path = Path(frame.depth_path)
    return _raw_to_metres(_read_raw_depth(path), frame, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from sas3d.scene.images import read_depth
    from sas3d.scene.types import Frame

    files = sorted(DATA.glob("*.depth.png"))
    if not files:
        raise SystemExit(f"benchmark data not found: {DATA}")
    k = np.eye(3)
    frames = [Frame(p.with_suffix(".jpg"), k, np.eye(4), 640, 480, p) for p in files]
    read_depth(frames[0])  # loads the compiled kernel (numba's cache), as in any fusion run
    for frame in frames:
        ours, ref = read_depth(frame), pil_depth(frame)
        if not np.array_equal(ours.view(np.uint32), ref.view(np.uint32)):
            raise SystemExit(f"values differ: {frame.depth_path}")
    pil_ms, ours_ms = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for frame in frames:
            pil_depth(frame)
        pil_ms.append((time.perf_counter() - start) / len(frames) * 1e3)
        start = time.perf_counter()
        for frame in frames:
            read_depth(frame)
        ours_ms.append((time.perf_counter() - start) / len(frames) * 1e3)
    pil, ours = statistics.median(pil_ms), statistics.median(ours_ms)
    print(f"{len(frames)} real 640x480 depth PNGs, {args.rounds} alternating rounds, values bit-identical")
    print(f"PIL + float conversion: {pil:.2f} ms per frame (rounds {min(pil_ms):.2f}-{max(pil_ms):.2f})")
    print(f"read_depth:             {ours:.2f} ms per frame (rounds {min(ours_ms):.2f}-{max(ours_ms):.2f})")
    print(f"depth decode speed-up: {pil / ours:.2f}x")


if __name__ == "__main__":
    main()
