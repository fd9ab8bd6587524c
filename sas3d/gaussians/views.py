"""Posed views for a Gaussian scene: any scan folder ``sas3d.load_scene`` reads, split into the views
features are lifted from and held-out views that are only rendered and scored."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sas3d.errors import ConfigError
from sas3d.scene.types import Frame


def load_views(path: str | Path, frame_stride: int | None = None) -> list[Frame]:
    """The posed frames of a scan folder (ScanNet export, 7-Scenes, ...; see ``sas3d.load_scene``)."""
    from sas3d import load_scene

    options = {} if frame_stride is None else {"frame_stride": frame_stride}
    scene = load_scene(path, **options)
    if not scene.frames:
        raise ConfigError(f"{path}: the scan has no posed frames")
    return list(scene.frames)


def split_views(frames: Sequence[Frame], holdout_every: int) -> tuple[list[Frame], list[Frame]]:
    """(lift views, held-out views): every ``holdout_every``-th frame (the last of each group of that
    many, in frame order) is held out; 0 holds none out."""
    if holdout_every < 0 or holdout_every == 1:
        raise ConfigError(f"holdout_every must be 0 (none) or >= 2, got {holdout_every}")
    if holdout_every == 0:
        return list(frames), []
    held = [f for i, f in enumerate(frames) if i % holdout_every == holdout_every - 1]
    lift = [f for i, f in enumerate(frames) if i % holdout_every != holdout_every - 1]
    return lift, held
