"""`sas3d train`: distil fused 2D features into the 3D student."""

from __future__ import annotations

import argparse

from sas3d.commands.preflight import Output, add_overwrite_option, preflight

HELP = "distil fused 2D features into a 3D student (recipes: openscene, ggsd, sas; supervised reference)"
DESCRIPTION = """\
Train the 3D student (MinkUNet18A) on scenes with fused 2D features (from `sas3d fuse`).

Recipes: `openscene` (pixel-point cosine loss), `ggsd` (+ superpoint loss, then an EMA teacher
with superpoint voting and a contrastive loss), `sas` (superpoint distillation for 70% of the
epochs, then temporal-ensembling self-distillation). `supervised` is not a distillation recipe but
a reference: the same student trained with a cross-entropy on the scenes' ground-truth labels, to
show what the student reaches at a given budget with perfect labels. A recipe is a YAML file over the TrainConfig
dataclass (sas3d/distill/config.py); override any value with --set section.key=value.

--scenes is a text file with one scene folder per line, or comma-separated folders. --fused holds
<scene name>.safetensors per scene. The run folder gets config.yaml, checkpoints/epoch_XXXX.safetensors,
last.safetensors, metrics.csv (loss and validation mIoU per epoch) and tb/ (TensorBoard).
A killed run continues with --resume and loses at most the unfinished epoch.
Multi-GPU: torchrun --nproc_per_node G -m sas3d train ... --device cuda
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default="sas", help="built-in recipe name (openscene, ggsd, sas, supervised) or a YAML path (default: sas)")
    parser.add_argument("--scenes", required=True, help="scene list: a text file (one folder per line) or comma-separated folders")
    parser.add_argument("--fused", required=True, help="folder with <scene name>.safetensors fused features")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--val-scenes", default=None, help="validation scenes with ground-truth labels (same format as --scenes)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.safetensors")
    parser.add_argument("--epochs", type=int, default=None, help="override schedule.epochs")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop after N epochs of the schedule (continue later with --resume)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="override the config's device")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    preflight(args, reads=[(Path(args.fused), "*.safetensors")],
              writes=[Output(Path(args.out), "folder", replaces=("config.yaml", "checkpoints", "last.safetensors", "metrics.csv", "tb", "tesd"),
                             marker="config.yaml")])
    from sas3d.distill.config import load_train_config
    from sas3d.distill.data import read_scene_list
    from sas3d.distill.trainer import train
    from sas3d.errors import ConfigError

    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_train_config(args.recipe, overrides, epochs=args.epochs)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")
    scenes = read_scene_list(args.scenes)
    val = read_scene_list(args.val_scenes) if args.val_scenes else []
    result = train(cfg, scenes, args.fused, args.out, resume=args.resume, val_scenes=val, stop_after=args.stop_after)
    if result.metrics:
        last = result.metrics[-1]
        miou = last.get("val_miou")
        extra = f", val mIoU {miou:.4f}" if isinstance(miou, float) else ""
        sim = " [simulated: distilled from simulated teacher features]" if result.simulated else ""
        print(f"trained {result.epochs_done} epochs -> {result.out_dir} (loss {last['loss']:.4f}{extra}){sim}")
    return 0
