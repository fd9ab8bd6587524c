"""Capability for any teacher: export probe images, score a model's saved outputs on them (SAS 3.2 Eq. 3-5)."""

from __future__ import annotations

import numpy as np
import torch

from sas3d.capability import teacher_class_map


def test_no_prediction_pixels_predict_no_class():
    # A mask teacher's "no mask" pixels are all-zero features. Before: argmax of a zero row = class 0,
    # so they counted as predictions of the vocabulary's first class and deflated its capability.
    text = torch.eye(3)
    fmap = np.zeros((2, 2, 3), np.float32)
    fmap[0, 0] = [0, 0, 1]
    fmap[1, 1] = [0.2, 0.9, 0]
    assert teacher_class_map(fmap, text, 2, 2).tolist() == [[2, -1], [-1, 1]]
    assert teacher_class_map(fmap, text, 4, 4)[:2, :2].tolist() == [[2, 2], [2, 2]]  # nearest resize keeps it
