"""``sas3d view SCENE``: local web viewer with colour modes and free-text queries."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import add_skip_invalid_poses_option, preflight

HELP = "open a local web viewer: RGB / ground truth / prediction / superpoints / text-query colours"
DESCRIPTION = """\
Serve the scene's points in a browser (viser). A drop-down switches the colouring between RGB,
ground truth, the predicted ScanNet20 class (nearest class prompt), and superpoints; typing a
query (e.g. "chair", "something to sit on") and pressing "search" colours every point by the cosine
similarity of its feature to the MiniLM text embedding (viridis colour map: yellow = most similar, grey = no feature).
Per-point features come from a trained 3D model (--checkpoint) or a fused-feature file (--fused);
without either, only RGB / ground truth / superpoints are shown.

The server listens on 127.0.0.1 by default (this machine only); use --host 0.0.0.0 deliberately
to expose it on the network. Only the viewer's own page may open its websocket (other web pages
you visit could otherwise read the scan through the local port); --allow-origin admits another
page, e.g. when you reach the viewer through a proxy. Stop with Ctrl-C.

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
    parser.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                        help="also accept websockets from this page origin, e.g. http://proxy.lab:9000 (repeatable)")
    add_skip_invalid_poses_option(parser)


def run(args: argparse.Namespace) -> int:
    from sas3d.errors import InputError
    from sas3d.query.similarity import query_prompt
    from sas3d.query.viewer import SceneViewer, load_viewer_data

    if not 0 < args.port < 65536 or args.max_points < 1 or args.point_size <= 0:
        raise InputError(None, f"need 0 < --port < 65536, --max-points >= 1 and --point-size > 0 "
                               f"(got {args.port}, {args.max_points}, {args.point_size})")
    if args.query is not None:
        query_prompt(args.query)
    preflight(args, reads=[args.checkpoint or args.fused], scenes=[args.scene])
    data = load_viewer_data(args.scene, args.checkpoint or args.fused, max_points=args.max_points,
                            skip_invalid_poses=args.skip_invalid_poses)
    SceneViewer(data, point_size=args.point_size).serve(host=args.host, port=args.port, query=args.query,
                                                        allowed_origins=args.allow_origin)
    return 0
