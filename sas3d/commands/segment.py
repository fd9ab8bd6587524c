"""``sas3d segment``: per-point open-vocabulary labels of a scene, exported as a label PLY + JSON legend."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "label every point with the best-matching class name (label PLY + legend)"
DESCRIPTION = """\
Classify each point against a list of class names by cosine similarity between its feature and
the class prompts ("a {name} in a scene", the catch-all "other"/"otherfurniture" as "other"), and
write a PLY with a ushort vertex property `label` (class index; 65535 = no prediction, i.e. no
camera saw the point in a fused file) and vertex colours from a fixed palette, plus
<out>.legend.json naming each index with its colour and point count.

Classes: a label set (--labelset, default scannet20; nuscenes16 uses the 43 names of SAS Table 8
mapped back to the 16 classes) or any comma-separated names (--classes "sofa,lamp,plant") --
open vocabulary, any words work.

Examples:
  sas3d segment run/best.safetensors scans/scene0470_00 --out labels.ply
  sas3d segment fused/scene0470_00.safetensors scans/scene0470_00 --classes "chair,table,whiteboard,floor,wall" --out l.ply
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="checkpoint (.safetensors), fused features (.safetensors) or reference fused .pt")
    parser.add_argument("scene", type=Path, help="scene folder/file (or an OpenScene .pth)")
    parser.add_argument("--out", type=Path, required=True, help="output label PLY")
    parser.add_argument("--labelset", default="scannet20", help="label set name or .txt file of class names")
    parser.add_argument("--classes", default=None, help="comma-separated class names (overrides --labelset)")
    parser.add_argument("--text-encoder", default="minilm", help="minilm | clip:<model id or path> (must match the features)")
    parser.add_argument("--tta", type=int, default=1, help="summed 3D passes when the source is a checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scene-labelset", default="scannet20", help="label set of OpenScene .pth scene labels")
    add_overwrite_option(parser)


def parse_classes(text: str) -> list[str]:
    """Split ``"a, b,c"`` into names; empty input is an error, duplicates are dropped (first kept)."""
    from sas3d.errors import InputError

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise InputError(None, f"--classes {text!r} contains no class names; give e.g. --classes \"chair,table,floor\"")
    return names


def run(args: argparse.Namespace) -> int:
    from sas3d.errors import InputError
    from sas3d.evaluate.interop import open_scene
    from sas3d.evaluate.predict import build_class_text, classify
    from sas3d.identity import check_text_space
    from sas3d.query.export import legend_path, write_label_ply
    from sas3d.query.similarity import load_point_features
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import LabelSet, get_label_set

    if args.tta < 1:
        raise InputError(None, f"--tta must be >= 1, got {args.tta}")
    ls = LabelSet("custom", tuple(parse_classes(args.classes))) if args.classes is not None else get_label_set(args.labelset)
    preflight(args, reads=[args.source], scenes=[args.scene], label_sets=[args.scene_labelset], text_encoders=[args.text_encoder],
              writes=[Output(args.out, "ply"), Output(legend_path(args.out), "json")])
    scene = open_scene(args.scene, args.scene_labelset)
    feats = load_point_features(args.source, scene, device=args.device, tta=args.tta)
    encoder = build_text_encoder(args.text_encoder, device=args.device)
    check_text_space(feats.metadata.get("text_space"), encoder, args.source, "the features")
    ct = build_class_text(ls, encoder)
    if ct.embeddings.shape[1] != feats.dim:
        raise InputError(args.source, f"features are {feats.dim}-d but {args.text_encoder} gives {ct.embeddings.shape[1]}-d text; use the encoder they were made with")
    labels = classify(feats.features, ct.embeddings, to_class=ct.to_class, seen=feats.seen)
    legend = write_label_ply(args.out, scene, labels.numpy(), list(ls.classes), {"label_set": ls.name, "query_names": ct.queries, "source": str(args.source)})
    print(f"wrote {args.out} and {legend}")
    return 0
