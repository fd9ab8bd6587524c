"""``sas3d render-views MESH --out SCENE_DIR``: render RGB-D frames of a mesh into a ScanNet-style scan."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "render RGB-D(+label) frames of a mesh along a handheld-like camera path (ScanNet layout)"
DESCRIPTION = """\
Turn a mesh (e.g. a ScanNet <id>_vh_clean_2.ply that ships without its RGB-D stream) into a full
scan that every other verb can read: the mesh (and its NYU40 .labels.ply) is copied into SCENE_DIR
as <id>_vh_clean_2.ply, and frames are rendered with a CPU z-buffer rasterizer along a camera path
that walks around the free floor area at head height (1.3-1.6 m, or lower for a cropped scan),
looking across the room with 15-25 degrees of pitch down. Written: color/N.jpg (vertex colour with
head-light shading), depth/N.png (uint16 mm), pose/N.txt, intrinsic/intrinsic_depth.txt and, with
labels, label/N.png (uint16 ScanNet20 index, 255 = ignore). Frames are numbered 0, 20, 40, ...

Labels come from --labels, or from <id>_vh_clean_2.labels.ply next to the mesh when it exists.
Prints the valid-depth fraction of the views and the vertex coverage (fraction of mesh vertices
visible in at least one view), and records the settings in SCENE_DIR/render_views.json. Frame
folders in SCENE_DIR that render-views did not write (a real scan's RGB-D stream) are never
replaced unless --overwrite is given.

Examples:
  sas3d render-views ../shared/data/scannet_scene0470_00/scene0470_00_vh_clean_2.ply --out scans/scene0470_00
  sas3d render-views room.ply --out scans/room --views 60 --width 640 --height 480
"""

MESH_SUFFIX = "_vh_clean_2.ply"
LABELS_SUFFIX = "_vh_clean_2.labels.ply"
MARKER = "render_views.json"  # written last: marks a folder whose frames render-views may replace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mesh", type=Path, help="triangle mesh PLY with vertex colours (z up, metres)")
    parser.add_argument("--out", type=Path, required=True, help="scene folder to write (ScanNet export layout)")
    parser.add_argument("--labels", type=Path, default=None, help="NYU40 labels PLY (default: <id>_vh_clean_2.labels.ply beside MESH)")
    parser.add_argument("--views", type=int, default=30, help="number of frames (default 30)")
    parser.add_argument("--width", type=int, default=640, help="image width (default 640)")
    parser.add_argument("--height", type=int, default=480, help="image height (default 480)")
    parser.add_argument("--seed", type=int, default=0, help="camera path seed")
    parser.add_argument("--frame-step", type=int, default=20, help="frame number step (default 20: 0, 20, 40, ...)")
    add_overwrite_option(parser)


def scene_name(mesh: Path) -> str:
    """ScanNet id from ``<id>_vh_clean_2.ply``, else the file stem."""
    return mesh.name[: -len(MESH_SUFFIX)] if mesh.name.endswith(MESH_SUFFIX) else mesh.stem


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.samefile(b)


def _copy(src: Path, dst: Path) -> None:
    import shutil

    from sas3d.utils.atomic import atomic_path

    if _same_file(src, dst):
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from sas3d.demo.render import LAYOUT_DIRS, render_views
    from sas3d.errors import InputError
    from sas3d.scene.ply import read_ply
    from sas3d.text.labelsets import nyu40_to_scannet20
    from sas3d.utils.atomic import write_json_atomic

    if args.views < 1 or args.width < 8 or args.height < 8 or args.frame_step < 1:
        raise InputError(None, f"need --views >= 1, --frame-step >= 1 and an image of at least 8x8 "
                               f"(got {args.views} views, step {args.frame_step}, {args.width}x{args.height})")
    name = scene_name(args.mesh)
    labels_path = args.labels
    if labels_path is None and args.mesh.name.endswith(MESH_SUFFIX):
        candidate = args.mesh.with_name(name + LABELS_SUFFIX)
        labels_path = candidate if candidate.is_file() else None
    copies = [(args.mesh, args.out / (name + MESH_SUFFIX))] + ([(labels_path, args.out / (name + LABELS_SUFFIX))] if labels_path else [])
    preflight(args, reads=[args.mesh, labels_path],
              writes=[Output(args.out, "folder", replaces=LAYOUT_DIRS, marker=MARKER), Output(args.out / MARKER, "json")]
              + [Output(dst, "ply") for src, dst in copies if not _same_file(src, dst)])
    mesh = read_ply(args.mesh)
    if mesh.faces is None or len(mesh.faces) == 0:
        raise InputError(args.mesh, "PLY has no faces: render-views needs a triangle mesh")
    labels = None
    if labels_path is not None:
        lab = read_ply(labels_path)
        if "label" not in lab.vertex:
            raise InputError(labels_path, "labels PLY has no per-vertex 'label' property")
        if lab.num_vertices != mesh.num_vertices:
            raise InputError(labels_path, f"labels PLY has {lab.num_vertices} vertices, mesh has {mesh.num_vertices}")
        labels = nyu40_to_scannet20(lab.vertex["label"].astype(np.int64))

    args.out.mkdir(parents=True, exist_ok=True)
    report = render_views(mesh.points(), mesh.faces, mesh.colors(), labels, args.out, args.views, args.width,
                          args.height, args.seed, frame_step=args.frame_step)
    for src, dst in copies:
        _copy(src, dst)
    valid = np.asarray(report.valid_fraction)
    write_json_atomic(args.out / MARKER, {
        "mesh": str(args.mesh), "labels": None if labels_path is None else str(labels_path), "views": args.views,
        "width": args.width, "height": args.height, "seed": args.seed, "frame_step": args.frame_step,
        "frames": report.frames, "valid_depth_fraction": report.valid_fraction, "vertex_coverage": report.coverage,
    })
    low = int((valid < 0.7).sum())
    print(f"rendered {len(report.frames)} views {args.width}x{args.height} into {args.out} "
          f"(scene {name}{', with labels' if labels is not None else ''})")
    print(f"valid depth per view: mean {valid.mean():.1%}, min {valid.min():.1%}; views below 70%: {low}")
    print(f"vertex coverage (seen in >= 1 view): {report.coverage:.1%}")
    return 0
