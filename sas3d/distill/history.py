"""State that self-distillation carries across steps: the TESD prediction history and the GGSD EMA teacher.

The TESD history is one (N, C) float32 array per training scene, memory-mapped from
``<run>/tesd/work/<scene>.npy`` and updated in place (the OS writes pages back lazily; nothing is
rewritten to disk per step). At each checkpoint the arrays are flushed and copied to
``<run>/tesd/epoch_XXXX/``; the checkpoint names that folder and the per-scene update counts
(the "history position"), so a resume restores exactly the history of the checkpointed epoch.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import torch

from sas3d.distill.losses import history_update
from sas3d.utils.atomic import atomic_path


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


class TESDHistory:
    """Per-point temporal ensembles ``H <- a*H + (1-a)*F3D`` for the scenes this process trains on."""

    def __init__(self, root: str | Path, alpha: float, init: str = "zeros"):
        self.root = Path(root)
        self.alpha = float(alpha)
        self.init = init
        self.work = self.root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.arrays: dict[str, np.memmap] = {}
        self.updates: dict[str, int] = {}

    def _array(self, scene: str, num_points: int, dim: int) -> np.memmap:
        arr = self.arrays.get(scene)
        if arr is None:
            path = self.work / f"{_safe(scene)}.npy"
            if path.is_file() and self.updates.get(scene, 0) > 0:
                arr = np.load(path, mmap_mode="r+")
                if arr.shape != (num_points, dim):
                    raise ValueError(f"{path}: history shape {arr.shape} != ({num_points}, {dim})")
            else:
                arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(num_points, dim))
                arr[:] = 0.0
                self.updates[scene] = 0
            self.arrays[scene] = arr
        return arr

    def update(self, scene: str, prediction: torch.Tensor) -> torch.Tensor:
        """Fold this step's per-point prediction (N, C) of ``scene`` into its history; return H (N, C)."""
        pred = prediction.detach().float().cpu().numpy()
        arr = self._array(scene, pred.shape[0], pred.shape[1])
        if self.init == "first" and self.updates[scene] == 0:
            arr[:] = pred
        else:
            arr[:] = history_update(arr, pred, self.alpha)
        self.updates[scene] += 1
        return torch.from_numpy(np.asarray(arr))

    def snapshot(self, folder: str | Path) -> None:
        """Flush and copy every history array into ``folder`` (atomic per file)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for scene, arr in self.arrays.items():
            arr.flush()
            with atomic_path(folder / f"{_safe(scene)}.npy") as tmp:
                shutil.copyfile(self.work / f"{_safe(scene)}.npy", tmp)

    def restore(self, folder: str | Path | None, updates: dict[str, int]) -> None:
        """Replace the working arrays by the snapshot in ``folder`` with the given update counts."""
        self.arrays = {}
        self.updates = {k: int(v) for k, v in updates.items()}
        for scene, count in self.updates.items():
            if count == 0 or folder is None:
                continue
            src = Path(folder) / f"{_safe(scene)}.npy"
            if not src.is_file():
                raise FileNotFoundError(f"{src}: TESD history snapshot missing; cannot resume exactly")
            with atomic_path(self.work / f"{_safe(scene)}.npy") as tmp:
                shutil.copyfile(src, tmp)


class EMATeacher:
    """GGSD's mean teacher: a copy of the student whose weights follow ``t <- m*t + (1-m)*s``.

    Parameters and floating-point buffers (BatchNorm running statistics) are averaged alike, so the
    teacher's normalisation matches its own lagging weights; integer buffers (batch counters) are
    copied. Copying the student's statistics onto the teacher's older weights instead gave the
    teacher mismatched activations and, on a 300-epoch single-scan run, collapsed GGSD to one class.
    """

    def __init__(self, student: torch.nn.Module, momentum: float):
        self.momentum = float(momentum)
        self.model = copy.deepcopy(student)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.mul_(self.momentum).add_(s.detach(), alpha=1.0 - self.momentum)
        for t, s in zip(self.model.buffers(), student.buffers()):
            if t.is_floating_point():
                t.mul_(self.momentum).add_(s.detach(), alpha=1.0 - self.momentum)
            else:
                t.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
