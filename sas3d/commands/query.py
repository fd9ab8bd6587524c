"""``sas3d query``: per-point similarity of a scene to free text, exported as a coloured PLY heat map."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "heat map of how well each point matches a free-text query (coloured PLY)"
DESCRIPTION = """\
Compute the cosine similarity between every point's feature and the text embedding of a query,
and write the scene as a PLY coloured by a colormap over the min-max scaled similarity, with the
raw value as a float vertex property `similarity` (MeshLab / CloudCompare can show either). Mesh
faces are kept. Points without a feature (no camera saw them, fused files only) are given the
scene's lowest similarity so they read as "no match".

Features come from a 3D model checkpoint (the model is run on the scene's points), from a fused
feature file (sas3d fuse output), or from an OpenScene/SAS released fused .pt file.

Prompt (--prompt): auto (default) wraps a bare name of up to three words in the label-set template
"a {text} in a scene", so "chair" is encoded like the class texts; longer text is used as typed.
raw = always as typed, template = always templated.

Examples:
  sas3d query run/best.safetensors scans/scene0470_00 "chair" --out chair.ply
  sas3d query fused/scene0470_00.safetensors scans/scene0470_00 "a place to sit down" --out sit.ply --cmap viridis
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="checkpoint (.safetensors), fused features (.safetensors) or reference fused .pt")
    parser.add_argument("scene", type=Path, help="scene folder/file (or an OpenScene .pth)")
    parser.add_argument("text", help="the query, e.g. 'chair' or 'something to sleep on'")
    parser.add_argument("--out", type=Path, required=True, help="output PLY")
    parser.add_argument("--text-encoder", default="minilm", help="minilm | clip:<model id or path> (must match the features)")
    parser.add_argument("--prompt", default="auto", choices=["auto", "raw", "template"])
    parser.add_argument("--cmap", default="turbo", help="matplotlib colormap name")
    parser.add_argument("--tta", type=int, default=1, help="summed 3D passes when the source is a checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scene-labelset", default="scannet20", help="label set of OpenScene .pth scene labels")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    import matplotlib

    from sas3d.errors import InputError
    from sas3d.evaluate.interop import open_scene
    from sas3d.identity import check_text_space
    from sas3d.query.export import write_heatmap_ply
    from sas3d.query.similarity import load_point_features, query_prompt, text_similarity, truncation_warning
    from sas3d.text.encoders import build_text_encoder

    if args.cmap not in matplotlib.colormaps:
        raise InputError(None, f"unknown colormap {args.cmap!r} (try turbo, viridis, plasma)")
    if args.tta < 1:
        raise InputError(None, f"--tta must be >= 1, got {args.tta}")
    prompt = query_prompt(args.text, args.prompt)
    preflight(args, reads=[args.source], scenes=[args.scene], label_sets=[args.scene_labelset],
              text_encoders=[args.text_encoder], writes=[Output(args.out, "ply")])
    encoder = build_text_encoder(args.text_encoder, device=args.device)
    warning = truncation_warning(encoder, prompt)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    scene = open_scene(args.scene, args.scene_labelset)
    feats = load_point_features(args.source, scene, device=args.device, tta=args.tta)
    check_text_space(feats.metadata.get("text_space"), encoder, args.source, "the features")
    text = encoder.encode([prompt])[0]
    if text.shape[0] != feats.dim:
        raise InputError(args.source, f"features are {feats.dim}-d but {args.text_encoder} gives {text.shape[0]}-d text; use the encoder they were made with")
    sim = text_similarity(feats.features, text)
    sim[~feats.seen] = float(sim[feats.seen].min()) if bool(feats.seen.any()) else 0.0
    write_heatmap_ply(args.out, scene, sim.numpy(), args.cmap)
    seen = int(feats.seen.sum())
    print(f"query {prompt!r}: similarity {float(sim.min()):.3f} .. {float(sim.max()):.3f} over {seen}/{scene.num_points} points with features")
    print(f"wrote {args.out}")
    return 0
