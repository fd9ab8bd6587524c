"""The TESD prediction history (SAS Sec. 3.4, Eq. 11), on disk, at any dataset size.

SAS keeps, per training point, a temporal ensemble ``H <- a*H + (1-a)*F3D`` of the student's (unit)
predictions and labels points by ``argmax(mean_sp(H) . T)`` (Eq. 12). Both steps are linear in H, so
we store the class scores ``H . T`` (N, K) instead of H (N, C): the labels are identical and the
history is C/K times smaller (384-d MiniLM / 20 classes: 19x; 768-d CLIP: 38x).

Layout: one file per scene and update count, ``<root>/<scene>.<count>.npy`` (float32 (N, K)). An
update reads the scene's newest file, writes the next one (atomically) and deletes the one it read
unless the last checkpoint refers to it. Only the scenes of the current step are ever in memory, so
memory does not grow with the number of scenes; nothing is copied at a checkpoint; and a run killed
after a checkpoint finds exactly the files that checkpoint names (:meth:`TESDHistory.restore`).
Data-parallel ranks share the folder: a scene is updated by one rank per step, and the steps are
ordered by the gradient all-reduce that sits between them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from sas3d.distill.losses import history_update
from sas3d.utils.atomic import atomic_path


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


class TESDHistory:
    """Per-point temporal ensembles of class scores for the training scenes, one file per version.

    Callers say how many updates a scene has had (the trainer derives it from its deterministic epoch
    plan), so no rank ever has to search the folder for a scene's newest version.
    """

    def __init__(self, root: str | Path, alpha: float, init: str = "zeros"):
        self.root = Path(root)
        self.alpha = float(alpha)
        self.init = init
        self.root.mkdir(parents=True, exist_ok=True)
        self.pinned: dict[str, int] = {}  # scene -> update count named by the last checkpoint

    def _path(self, scene: str, count: int) -> Path:
        return self.root / f"{_safe(scene)}.{count}.npy"

    def versions(self, scene: str) -> list[int]:
        """Update counts of the files on disk for ``scene``, ascending (lists the folder)."""
        pattern = re.compile(re.escape(_safe(scene)) + r"\.(\d+)\.npy$")
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := pattern.match(p.name)))

    def update(self, scene: str, count: int, scores: torch.Tensor) -> torch.Tensor:
        """Fold this step's per-point class scores (N, K) into the history of ``scene``, which has had
        ``count`` updates so far; return the new H.T (N, K)."""
        new = scores.detach().float().cpu().numpy()
        if count > 0:
            path = self._path(scene, count)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: TESD history of update {count} is missing")
            old = np.load(path)
            if old.shape != new.shape:
                raise ValueError(f"{path}: history shape {old.shape} != {new.shape}")
            new = history_update(old, new, self.alpha)
        elif self.init == "zeros":
            new = history_update(np.zeros_like(new), new, self.alpha)
        with atomic_path(self._path(scene, count + 1)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, new.astype(np.float32))
        if count > 0 and self.pinned.get(scene) != count:
            self._path(scene, count).unlink(missing_ok=True)
        return torch.from_numpy(new)

    def commit(self, counts: dict[str, int]) -> dict[str, int]:
        """Called when a checkpoint is written, with every scene's update count: pin those versions,
        delete the ones pinned before; returns the counts the checkpoint records."""
        counts = {k: int(v) for k, v in counts.items() if int(v) > 0}
        for scene, previous in self.pinned.items():
            if counts.get(scene) != previous:
                self._path(scene, previous).unlink(missing_ok=True)
        self.pinned = counts
        return dict(counts)

    def restore(self, counts: dict[str, int], scenes: list[str]) -> None:
        """Return to the state a checkpoint recorded: delete versions written after it (or of scenes it
        did not reach); FileNotFoundError if a version it names is missing. Lists the folder once."""
        wanted = {_safe(s): int(counts.get(s, 0)) for s in scenes}
        pattern = re.compile(r"(.+)\.(\d+)\.npy$")
        found: set[tuple[str, int]] = set()
        for path in self.root.iterdir():
            m = pattern.match(path.name)
            if m and m.group(1) in wanted:
                found.add((m.group(1), int(m.group(2))))
                if int(m.group(2)) != wanted[m.group(1)]:
                    path.unlink(missing_ok=True)
        for scene in scenes:
            keep = wanted[_safe(scene)]
            if keep and (_safe(scene), keep) not in found:
                raise FileNotFoundError(f"{self._path(scene, keep)}: TESD history of the checkpoint is missing; cannot resume exactly")
        self.pinned = {k: int(v) for k, v in counts.items() if int(v) > 0}
