"""Self-distillation strategies of stage 2: SAS's TESD and GGSD's EMA teacher.

Each strategy owns its state and exposes the same small interface to the trainer:

- ``loss(pred, batch, scenes, balance)`` -> the per-scene-averaged pseudo-label loss of a step, and
  it keeps the step's pseudo-labels in ``last_labels`` (one (Ms,) tensor per scene part) for
  inspection;
- ``after_step(model)`` -> update state that follows the optimiser (the EMA teacher);
- ``checkpoint_state()`` / ``restore(meta, tensors)`` -> what a checkpoint stores and gives back;
- ``reads_full_output`` -> whether ``loss`` reads the student's output on every voxel
  (``pred.detach()``); only then does a step compute the head on all of them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sas3d.distill import losses as L
from sas3d.distill.batching import Batch, EpochPlan, ScenePart
from sas3d.distill.config import TrainConfig
from sas3d.distill.data import SceneData
from sas3d.distill.history import TESDHistory
from sas3d.distill.rows import StepPredictions
from sas3d.models.norm import forward_with_norm_stats


def pseudo_label_weights(part: ScenePart, labels: torch.Tensor, balance: str, sp_labels: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Weights of a pseudo-label CE under ``loss.balance``: (per self-distilled row, per distinct
    superpoint of those rows in sorted order, or None when ``sp_labels`` (per row) is not given).

    "class" and "cluster" balance over the pseudo-labels (classes); "superpoint" weighs each
    superpoint equally in the point term (the superpoint term already averages over superpoints).
    """
    if balance == "none":
        return None, None
    sp = part.voxel_sp[part.self_rows].to(labels.device)
    if balance == "superpoint":
        return L.balance_weights(sp), None
    w_sp = None
    if sp_labels is not None:
        _, first = _first_of_each(sp)
        w_sp = L.balance_weights(sp_labels[first])
    return L.balance_weights(labels), w_sp


def _first_of_each(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct ``ids`` and the index of one row of each (the superpoint-term row order)."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(uniq),), ids.shape[0], dtype=torch.long, device=ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(ids.shape[0], device=ids.device), reduce="amin")
    return uniq, first


class TESD:
    """Temporal-ensembling self-distillation (SAS 3.4, Eq. 11-13) with an on-disk history."""

    name = "tesd"
    reads_full_output = True  # loss() reads pred.detach(): every voxel's class scores

    def __init__(self, cfg: TrainConfig, text: torch.Tensor, root: Path, plan: EpochPlan):
        self.cfg, self.text, self.plan = cfg, text, plan
        self.history = TESDHistory(root, cfg.tesd.alpha, cfg.tesd.init)
        self.last_labels: list[torch.Tensor] = []
        self._cursor: tuple[int, int, np.ndarray] | None = None  # (epoch, step, updates of each scene before it)

    def updates_before(self, epoch: int, step: int) -> np.ndarray:
        """(num_scenes,) TESD updates every scene's history has had before step ``step`` of ``epoch``."""
        if self._cursor is None or self._cursor[:2] != (epoch, step):
            self._cursor = (epoch, step, self.plan.visits_before(self.cfg.stage1_epochs, epoch, step))
        return self._cursor[2]

    def _advance(self) -> None:
        """Move the update counts past the step just trained."""
        assert self._cursor is not None
        epoch, step, counts = self._cursor
        counts = counts.copy()
        np.add.at(counts, self.plan.global_batch_scenes(epoch, step), 1)
        self._cursor = (epoch, step + 1, counts) if step + 1 < self.plan.steps else (epoch + 1, 0, counts)

    def loss(self, pred: torch.Tensor, batch: Batch, scenes: Sequence[SceneData], balance: str) -> torch.Tensor:
        text = self.text.to(pred.device)
        # per-point class scores of this step's unit predictions: (unit(F3D) . T), linear like H . T
        scores = F.normalize(pred.detach().float(), dim=1, eps=1e-8) @ text.T  # every voxel, no gradient
        terms, self.last_labels = [], []
        done = self.updates_before(batch.epoch, batch.step)
        for part in batch.parts:
            scene = scenes[part.scene]
            point_scores = scores[part.start : part.start + part.num_voxels][torch.from_numpy(part.point_to_voxel).to(pred.device)]
            # update with this prediction first, then label: with zero init the first labels would
            # otherwise come from an all-zero history
            h = self.history.update(scene.name, int(done[part.scene]), point_scores)
            pt_lab, _, sp_lab = L.tesd_pseudo_labels(h, torch.from_numpy(scene.superpoints), None, self.cfg.tesd.point_label)
            rows = part.self_rows
            vox_pt = pt_lab[torch.from_numpy(part.voxel_to_point)[rows]].to(pred.device)
            sp = part.voxel_sp[rows]
            vox_sp = sp_lab[sp].to(pred.device)  # superpoint ids are consecutive 0..S-1
            self.last_labels.append(vox_pt.cpu())
            w_pt, w_sp = pseudo_label_weights(part, vox_pt, balance, vox_sp)
            terms.append(L.tesd_loss(pred[part.start + rows], text, vox_pt, sp.to(pred.device), vox_sp, self.cfg.tesd.temperature,
                                     w_pt, w_sp))
        self._advance()
        return torch.stack(terms).mean()

    def after_step(self, model: torch.nn.Module) -> None:
        pass

    def checkpoint_state(self, epochs_done: int, scene_names: list[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        counts = self.plan.visits_before(self.cfg.stage1_epochs, epochs_done, 0) if epochs_done > self.cfg.stage1_epochs else None
        updates = self.history.commit({} if counts is None else dict(zip(scene_names, counts.tolist())))
        return {"tesd": {"folder": self.history.root.name, "updates": updates}}, {}

    def restore(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor], scene_names: list[str]) -> None:
        self.history.restore((meta.get("tesd") or {}).get("updates", {}), scene_names)


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


class GGSD:
    """GGSD 3.4: EMA teacher -> per-voxel argmax -> majority vote per superpoint -> contrastive CE."""

    name = "ggsd"
    reads_full_output = False  # its pseudo-labels come from the EMA teacher's own forward

    def __init__(self, cfg: TrainConfig, text: torch.Tensor, model: torch.nn.Module):
        self.cfg, self.text = cfg, text
        self.student = model
        self.teacher: EMATeacher | None = None  # created at the first stage-2 step (GGSD: from the stage-1 student)
        self.last_labels: list[torch.Tensor] = []

    def loss(self, pred: torch.Tensor, batch: Batch, scenes: Sequence[SceneData], balance: str) -> torch.Tensor:
        if self.teacher is None:
            self.teacher = EMATeacher(self.student, self.cfg.ggsd.momentum)
        text = self.text.to(pred.device)
        with torch.no_grad():
            # normalised as the student is at inference (sas3d.models.norm: a one-scene-per-step student's
            # running averages are another scene's statistics)
            t_out = forward_with_norm_stats(self.teacher.model, batch.features.to(pred.device), batch.coords.to(pred.device),
                                            batch.batch_size)
            labels = L.text_logits(t_out.float(), text, 1.0).argmax(dim=1)
        terms, self.last_labels = [], []
        for part in batch.parts:
            local = slice(part.start, part.start + part.num_voxels)
            voted = L.vote_labels(labels[local], part.voxel_sp.to(pred.device), text.shape[0])[part.self_rows.to(pred.device)]
            self.last_labels.append(voted.cpu())
            weights, _ = pseudo_label_weights(part, voted, balance)
            terms.append(L.ggsd_contrastive_loss(pred[part.start + part.self_rows], text, voted, self.cfg.ggsd.temperature, weights))
        return torch.stack(terms).mean()

    def after_step(self, model: torch.nn.Module) -> None:
        if self.teacher is not None:
            self.teacher.update(model)

    def checkpoint_state(self, epochs_done: int, scene_names: list[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if self.teacher is None:
            return {"ema": False}, {}
        return {"ema": True}, {f"ema.{k}": v for k, v in self.teacher.state_dict().items()}

    def restore(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor], scene_names: list[str]) -> None:
        ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        if ema:
            self.teacher = EMATeacher(self.student, self.cfg.ggsd.momentum)
            self.teacher.load_state_dict(ema)


def build_strategy(cfg: TrainConfig, text: torch.Tensor, model: torch.nn.Module, out_dir: Path, plan: EpochPlan
                   ) -> TESD | GGSD | None:
    """The recipe's stage-2 strategy (None when it has none)."""
    if cfg.loss.self_distill == "tesd":
        return TESD(cfg, text, out_dir / "tesd", plan)
    if cfg.loss.self_distill == "ggsd":
        return GGSD(cfg, text, model)
    return None
