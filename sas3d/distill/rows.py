"""The student's outputs on the voxel rows a training step's losses read.

Every loss of a step reads the student's (M, C) output at a few row sets (the supervised voxels of
each scene, the self-distillation rows, the labelled rows); TESD also reads all of it, but without
gradient. Computing the (per-voxel linear) head with gradient only on the union of those rows, and
on the rest without it, gives the same values and the same gradients while the step's autograd
graph and its zero-filled gradient buffers shrink from (M, C) to (R, C) (C is the text width, 384+).
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch


class StepPredictions:
    """``pred[index]`` as on the full (M, C) output, for indices among the rows asked for;
    ``pred.detach()`` is the full output without gradient (when the step asked for it).

    ``values`` holds the rows of ``row_sets`` one set after the other. An index equal to one of the
    sets is answered with that set's block (a split: its backward is one concatenation, where a
    gather's is a zero-filled (R, C) buffer and a sorted scatter per use); any other index of rows
    asked for is gathered."""

    def __init__(self, values: torch.Tensor, row_sets: Sequence[torch.Tensor], everything: torch.Tensor | None, num_rows: int):
        self.values, self.everything = values, everything
        self.row_sets = list(row_sets)
        self.blocks = values.split([len(r) for r in self.row_sets]) if self.row_sets else ()
        self.pos = torch.full((int(num_rows),), -1, dtype=torch.long, device=values.device)
        if self.row_sets:
            rows = torch.cat(self.row_sets)
            self.pos[rows] = torch.arange(rows.shape[0], device=values.device)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.values.device)
        for rows, block in zip(self.row_sets, self.blocks):
            if rows.shape == index.shape and torch.equal(rows, index):
                return block
        local = self.pos[index]
        if local.numel() and bool((local < 0).any()):
            raise IndexError("a loss read a voxel row the step did not ask the student for (see StepPredictions)")
        return self.values.index_select(0, local)

    def detach(self) -> torch.Tensor:
        if self.everything is None:
            raise RuntimeError("this step did not ask the student for its full output (predict_rows(full=True))")
        return self.everything

    def sum(self) -> torch.Tensor:
        return self.values.sum()


def accepts_rows(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` takes ``rows=`` (the built-in MinkUNet does; a registered model may not)."""
    return "rows" in inspect.signature(model.forward).parameters


def predict_rows(net: torch.nn.Module, model: torch.nn.Module, features: torch.Tensor, coords: torch.Tensor,
                 batch_size: int, row_sets: Sequence[torch.Tensor], full: bool = True) -> StepPredictions:
    """Run the student (``net``: ``model`` or its DDP wrapper) for a step whose losses read ``row_sets``
    (global batch rows). Sets that overlap are merged into one set of their distinct rows. ``full``:
    also the full output without gradient (``pred.detach()``); a model without ``rows=`` always gives it."""
    device = features.device
    sets = [r.to(device=device, dtype=torch.long) for r in row_sets if r.numel()]
    if sets:
        rows = torch.cat(sets)
        if torch.unique(rows).shape[0] != rows.shape[0]:
            sets = [torch.unique(rows)]
    if not accepts_rows(model):
        out = net(features, coords, batch_size)
        return StepPredictions(out, [torch.arange(out.shape[0], device=device)], out.detach(), out.shape[0])
    rows = torch.cat(sets) if sets else torch.zeros(0, dtype=torch.long, device=device)
    values, everything = net(features, coords, batch_size, rows=rows, full=full)
    return StepPredictions(values, sets, everything, features.shape[0])
