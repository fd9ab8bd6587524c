"""Distillation losses against the papers' equations on hand-made numbers."""

from __future__ import annotations

import math

import pytest
import torch

from sas3d.distill import losses as L


def test_cosine_loss_hand_computed():
    # cos((1,0),(1,0)) = 1 ; cos((1,0),(0,2)) = 0 ; cos((3,4),(4,3)) = 24/25
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    target = torch.tensor([[2.0, 0.0], [0.0, 2.0], [4.0, 3.0]])
    expected = ((1 - 1) + (1 - 0) + (1 - 24 / 25)) / 3
    assert L.cosine_loss(pred, target).item() == pytest.approx(expected, abs=1e-6)


def test_superpoint_mean_and_loss():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 5.0], [0.0, 5.0]])
    sp = torch.tensor([7, 7, 3, 3])
    ids, means, inverse = L.superpoint_mean(pred, sp)
    assert ids.tolist() == [3, 7]
    assert torch.allclose(means, torch.tensor([[0.5, 1.0], [0.5, 0.5]]))
    assert inverse.tolist() == [1, 1, 0, 0]
    # sp 7: mean pred (0.5,0.5) vs mean target (1,1): cos = 1 -> loss 0
    # sp 3: mean pred (0.5,1.0) vs (0,5): cos = 1/sqrt(1.25)
    expected = (0.0 + (1 - 1 / math.sqrt(1.25))) / 2
    assert L.superpoint_cosine_loss(pred, target, sp).item() == pytest.approx(expected, abs=1e-6)


def test_sas_stage1_with_superpoint_broadcast_target():
    # SAS Eq. 10 (official code): L = (1 - cos(F3D, F2D_sp broadcast)) + (1 - cos(F3D_sp, F2D_sp))
    f3d = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f2d = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    sp = torch.tensor([0, 0])
    f2d_sp = f2d.mean(0, keepdim=True).expand(2, 2)  # (1, 1)
    point = L.cosine_loss(f3d, f2d_sp).item()
    assert point == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)  # both rows at 45 degrees
    spl = L.superpoint_cosine_loss(f3d, f2d_sp, sp).item()  # mean F3D (0.5,0.5) is parallel to (1,1)
    assert spl == pytest.approx(0.0, abs=1e-6)


def test_history_update_formula():
    h = torch.tensor([[1.0, 2.0]])
    f = torch.tensor([[3.0, -2.0]])
    out = L.history_update(h, f, 0.75)
    assert torch.allclose(out, torch.tensor([[0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.25 * 2]]))


def test_tesd_pseudo_labels_and_loss_hand_computed():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # superpoint 0: rows (1,0.1) and (0.2,1): mean (0.6,0.55) -> class 0 (even though row 2 alone says 1)
    # superpoint 1: row (0.1,1) -> class 1
    history = torch.tensor([[1.0, 0.1], [0.2, 1.0], [0.1, 1.0]])
    sp = torch.tensor([0, 0, 1])
    pt, ids, sp_lab = L.tesd_pseudo_labels(history, sp, text)
    assert ids.tolist() == [0, 1] and sp_lab.tolist() == [0, 1]
    assert pt.tolist() == [0, 0, 1]  # broadcast from the superpoint (official SAS code)
    pt_own, _, _ = L.tesd_pseudo_labels(history, sp, text, point_label="point")
    assert pt_own.tolist() == [0, 1, 1]

    pred = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    tau = 0.5
    # point term: cosines with the text rows / tau
    def ce(cos_row, label):
        logits = [c / tau for c in cos_row]
        return -logits[label] + math.log(sum(math.exp(x) for x in logits))

    s = 1 / math.sqrt(2)
    point_term = (ce([1, 0], 0) + ce([0, 1], 0) + ce([s, s], 1)) / 3
    # superpoint term: sp 0 mean pred (1, 1.5) -> unit (2,3)/sqrt(13); sp 1 (1,1)
    u = [2 / math.sqrt(13), 3 / math.sqrt(13)]
    sp_term = (ce(u, 0) + ce([s, s], 1)) / 2
    got = L.tesd_loss(pred, text, pt, sp, sp_lab[sp], tau).item()
    assert got == pytest.approx(point_term + sp_term, abs=1e-5)


def test_ggsd_vote_and_contrastive_loss_hand_computed():
    labels = torch.tensor([2, 2, 1, 0, 0, 1, 1])
    sp = torch.tensor([5, 5, 5, 9, 9, 9, 9])
    # sp 5: {2,2,1} -> 2 ; sp 9: {0,0,1,1} tie -> lowest class id 0
    assert L.vote_labels(labels, sp, 3).tolist() == [2, 2, 2, 0, 0, 0, 0]

    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    pred = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    target = torch.tensor([0, 2])
    tau = 0.01
    # row 0: cosines (1, 0, -1); row 1: (0, 1, 0); logits / 0.01
    l0 = -100 + math.log(math.exp(100) + math.exp(0) + math.exp(-100))
    l1 = -0 + math.log(1 + math.exp(100) + 1)
    expected = (l0 + l1) / 2
    assert L.ggsd_contrastive_loss(pred, text, target, tau).item() == pytest.approx(expected, rel=1e-5)


def test_empty_inputs_give_zero_loss_with_graph():
    pred = torch.zeros((0, 4), requires_grad=True)
    for loss in (L.cosine_loss(pred, pred), L.superpoint_cosine_loss(pred, pred, torch.zeros(0, dtype=torch.long))):
        assert loss.item() == 0.0 and loss.requires_grad


def test_supervised_reference_loss_hand_computed():
    # logits = cos(f, T_k) / tau; rows: f = (1, 0) against T = [(1, 0), (0, 1)] -> cos (1, 0)
    #                                   f = (0, 3)                               -> cos (0, 1)
    pred = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1])
    tau = 0.5
    row0 = -math.log(math.exp(0 / tau) / (math.exp(1 / tau) + math.exp(0 / tau)))  # wrong class
    row1 = -math.log(math.exp(1 / tau) / (math.exp(0 / tau) + math.exp(1 / tau)))  # right class
    assert L.supervised_loss(pred, text, labels, tau).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_balance_weights_give_every_group_an_equal_share():
    # groups 5 (3 rows), 2 (1 row): each group sums to 1/2, rows inside a group alike
    w = L.balance_weights(torch.tensor([5, 5, 2, 5]))
    assert torch.allclose(w, torch.tensor([1 / 6, 1 / 6, 1 / 2, 1 / 6]))
    # with base weights inside the groups: group 0 rows 1 and 3 -> 1/4*(1/4), 1/4*(3/4); group 1 alone 1/2
    w = L.balance_weights(torch.tensor([0, 1, 0]), base=torch.tensor([1.0, 9.0, 3.0]))
    assert torch.allclose(w, torch.tensor([0.125, 0.5, 0.375]))
    assert L.balance_weights(torch.zeros(0, dtype=torch.long)).numel() == 0


def test_class_balanced_cosine_loss_lets_a_small_class_count_as_much_as_a_large_one():
    """Nine wall rows fit perfectly, one window row is orthogonal: plain mean 0.1, balanced 0.5."""
    pred = torch.tensor([[1.0, 0.0]] * 9 + [[1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]] * 9 + [[0.0, 1.0]])
    classes = torch.tensor([0] * 9 + [8])
    assert L.cosine_loss(pred, target).item() == pytest.approx(0.1, abs=1e-6)
    assert L.cosine_loss(pred, target, L.balance_weights(classes)).item() == pytest.approx(0.5, abs=1e-6)


def test_weighted_superpoint_and_pseudo_label_losses_hand_computed():
    # superpoint loss, two superpoints with losses 0 and 1; weights (0.2, 0.8) -> 0.8
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    sp = torch.tensor([4, 9])
    assert L.superpoint_cosine_loss(pred, target, sp, torch.tensor([0.2, 0.8])).item() == pytest.approx(0.8, abs=1e-6)
    # TESD with weights: CE rows computed by hand, then weighted sums
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    ce = -torch.log_softmax(torch.tensor([[1.0, 0.0], [0.0, 1.0]]) / 0.5, dim=1)[:, 0]  # per row, per superpoint alike here
    w_pt, w_sp = torch.tensor([0.25, 0.75]), torch.tensor([0.6, 0.4])
    got = L.tesd_loss(pred, text, labels, sp, labels, 0.5, w_pt, w_sp).item()
    assert got == pytest.approx(float((ce * w_pt).sum() + (ce * w_sp).sum()), abs=1e-5)
    got = L.ggsd_contrastive_loss(pred, text, labels, 0.5, torch.tensor([1.0, 0.0])).item()
    assert got == pytest.approx(float(ce[0]), abs=1e-5)
