"""``sas3d view SCENE``: local web viewer with colour modes and free-text queries."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "open a local web viewer: RGB / ground truth / prediction / superpoints / text-query colours"
DESCRIPTION = """\
Serve the scene's points in a browser (viser). A drop-down switches the colouring between RGB,
ground truth, the predicted ScanNet20 class (nearest class prompt), and superpoints; typing a
query (e.g. "chair", "something to sit on") and pressing "search" colours every point by the cosine
similarity of its feature to the MiniLM text embedding (viridis colour map: yellow = most similar, grey = no feature).
Per-point features come from a trained 3D model (--checkpoint) or a fused-feature file (--fused);
without either, only RGB / ground truth / superpoints are shown.

The server listens on 127.0.0.1 by default (this machine only); use --host 0.0.0.0 deliberately
to expose it on the network. Stop with Ctrl-C.

Examples:
  sas3d view scans/scene0470_00 --checkpoint runs/demo/sas/model.safetensors
  sas3d view scans/scene0470_00 --fused runs/demo/fused/scene0470_00.safetensors --port 8081
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="scene folder or file (any layout sas3d can read)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, default=None, help="trained 3D model checkpoint (.safetensors)")
    src.add_argument("--fused", type=Path, default=None, help="fused point-feature file (.safetensors)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one is used if taken)")
    parser.add_argument("--max-points", type=int, default=200_000, help="randomly keep at most this many points")
    parser.add_argument("--point-size", type=float, default=0.02, help="point size in metres")
    parser.add_argument("--query", default=None, help="run this query right away")


def run(args: argparse.Namespace) -> int:
    from sas3d.query.viewer import SceneViewer, load_viewer_data

    data = load_viewer_data(args.scene, args.checkpoint or args.fused, max_points=args.max_points)
    viewer = SceneViewer(data, point_size=args.point_size)
    viewer.start(host=args.host, port=args.port)
    if args.query:
        viewer.set_query(args.query)
    print(f"sas3d viewer for {data.name} ({len(data.points):,} points): http://{args.host}:{viewer.port}  (Ctrl-C to stop)")
    viewer.serve_forever()
    return 0
