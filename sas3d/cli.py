"""The ``sas3d`` command: one verb per job. Each verb lives in ``sas3d/commands/<verb>.py``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from sas3d import __version__
from sas3d.errors import Sas3dError

# Pipeline order; each name is a module in sas3d.commands (dashes -> underscores).
VERBS = [
    "fuse",
    "capability",
    "superpoints",
    "train",
    "inplace",
    "eval",
    "query",
    "segment",
    "instances",
    "render-views",
    "gaussians",
    "view",
    "demo",
]


def _command_module(verb: str):
    return importlib.import_module(f"sas3d.commands.{verb.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sas3d",
        description="Open-vocabulary 3D scene segmentation (SAS). Run `sas3d VERB --help` for each verb.",
    )
    parser.add_argument("--version", action="version", version=f"sas3d {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        try:
            mod = _command_module(verb)
        except ModuleNotFoundError as exc:
            if exc.name != f"sas3d.commands.{verb.replace('-', '_')}":
                raise
            continue  # verb not built yet
        p = sub.add_parser(
            verb,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with _progress_setting(getattr(args, "no_progress", False)):
            return int(args._run(args) or 0)
    except Sas3dError as exc:
        print(f"sas3d {args.verb}: error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _progress_setting(no_progress: bool):
    """``--no-progress`` hides every bar of the run, also those of stages that take no flag (TQDM_DISABLE)."""
    if not no_progress:
        yield
        return
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


if __name__ == "__main__":
    raise SystemExit(main())
