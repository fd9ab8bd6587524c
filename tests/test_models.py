"""3D student: spconv vs dense conv, voxelisation, MinkUNet18A, checkpoints, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sas3d.geometry.augment import AugmentConfig, augment
from sas3d.geometry.voxel import batch_coords, devoxelize, voxelize
from sas3d.models.checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from sas3d.models.registry import build_model, list_models, register
from sas3d.models.spconv_compat import ensure_spconv_cpu_backward


def _active_grid(seed, size=6, n=60):
    g = torch.Generator().manual_seed(seed)
    idx = torch.unique(torch.randint(0, size, (n, 3), generator=g), dim=0)
    return idx, g


def test_spconv_submconv_matches_dense_conv3d_with_grads():
    import spconv.pytorch as spconv

    ensure_spconv_cpu_backward()
    assert ensure_spconv_cpu_backward() in (True, False)  # idempotent
    size, cin, cout = 6, 3, 4
    idx, g = _active_grid(0, size)
    feats = torch.randn(len(idx), cin, generator=g, dtype=torch.float64).float().requires_grad_(True)
    conv = spconv.SubMConv3d(cin, cout, 3, bias=False, indice_key="t")
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    assert tuple(conv.weight.shape) == (cout, 3, 3, 3, cin)  # spconv 2.x layout (out, kx, ky, kz, in)
    coords = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int()
    out = conv(spconv.SparseConvTensor(feats, coords, [size] * 3, 1)).features

    # dense reference: zero grid with the active features, conv3d, read back at active sites
    feats_d = feats.detach().clone().requires_grad_(True)
    w_d = conv.weight.detach().permute(0, 4, 1, 2, 3).contiguous().requires_grad_(True)
    grid = torch.zeros(1, cin, size, size, size)
    grid[0, :, idx[:, 0], idx[:, 1], idx[:, 2]] = feats_d.T
    dense = F.conv3d(grid, w_d, padding=1)[0, :, idx[:, 0], idx[:, 1], idx[:, 2]].T
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)

    upstream = torch.randn(out.shape, generator=g)
    (out * upstream).sum().backward()
    (dense * upstream).sum().backward()
    torch.testing.assert_close(feats.grad, feats_d.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.weight.grad.permute(0, 4, 1, 2, 3), w_d.grad, atol=1e-5, rtol=1e-5)


def test_voxelize_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (5000, 3)).astype(np.float32)
    pts = np.concatenate([pts, pts[:100] + 1e-4])  # near-duplicates share a voxel
    vs = 0.05
    vox = voxelize(pts, vs)
    assert vox.coords.dtype == np.int32 and vox.coords.min() == 0
    assert len(np.unique(vox.coords, axis=0)) == vox.num_voxels  # unique voxels
    # every point lies in its voxel: floor(p/vs) - min == coords[point_to_voxel]
    expect = np.floor(pts.astype(np.float64) / vs).astype(np.int64)
    expect -= expect.min(0)
    assert np.array_equal(vox.coords[vox.point_to_voxel], expect)
    assert np.array_equal(vox.point_to_voxel[vox.voxel_to_point], np.arange(vox.num_voxels))
    assert vox.num_voxels < len(pts)
    # devoxelise gathers per-voxel values back onto points (numpy and torch)
    per_voxel = np.arange(vox.num_voxels) * 10
    assert np.array_equal(devoxelize(per_voxel, vox), vox.point_to_voxel * 10)
    assert torch.equal(devoxelize(torch.as_tensor(per_voxel), vox), torch.as_tensor(vox.point_to_voxel * 10))
    b = batch_coords([vox.coords, vox.coords[:7]])
    assert b.shape == (vox.num_voxels + 7, 4) and b.dtype == np.int32
    assert (b[: vox.num_voxels, 0] == 0).all() and (b[vox.num_voxels :, 0] == 1).all()
    assert np.array_equal(b[vox.num_voxels :, 1:], vox.coords[:7])


def _expected_minkunet18a_params(cin, cout):
    """Parameter count of MinkowskiEngine's MinkUNet18A written out from its architecture."""
    planes, init = (32, 64, 128, 256, 128, 128, 96, 96), 32

    def bn(c):
        return 2 * c

    def block(i, o):
        return 27 * i * o + bn(o) + 27 * o * o + bn(o) + (i * o + bn(o) if i != o else 0)

    total = 125 * cin * init + bn(init)
    c, skips = init, [init]
    for lvl in range(4):
        total += 8 * c * c + bn(c) + block(c, planes[lvl]) + block(planes[lvl], planes[lvl])
        c = planes[lvl]
        skips.append(c)
    for i in range(4):
        o = planes[4 + i]
        total += 8 * c * o + bn(o) + block(o + skips[3 - i], o) + block(o, o)
        c = o
    return total + c * cout


def _random_scene(seed, n=1500, extent=24):
    g = torch.Generator().manual_seed(seed)
    idx = torch.unique(torch.randint(0, extent, (n, 3), generator=g), dim=0)
    return idx, g


def test_minkunet18a_forward_backward_and_size():
    assert "minkunet18a" in list_models()
    model = build_model("minkunet18a", in_channels=1, out_channels=384)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nMinkUNet18A(out=384): {n_params / 1e6:.2f} M parameters")
    assert n_params == _expected_minkunet18a_params(1, 384)
    a, _ = _random_scene(0, n=500, extent=20)
    b, _ = _random_scene(1, n=300, extent=20)
    coords = torch.as_tensor(batch_coords([a.numpy(), b.numpy() + 5]))  # offset: coords need not start at 0
    feats = torch.ones(len(coords), 1)
    out = model(feats, coords, 2)
    assert out.shape == (len(coords), 384)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert model.stem.weight.grad.abs().sum() > 0


def test_student_rows_give_the_full_outputs_values_and_gradients():
    """The trainer's row-restricted head (StepPredictions): pred[idx] and every parameter gradient of a
    loss on those rows equal those of the plain full-output call; the full output is there without
    gradient; a row not asked for is refused; a model without ``rows=`` falls back to the full call."""
    from sas3d.distill.rows import accepts_rows, predict_rows

    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=16, planes=(8, 8, 8, 8, 8, 8, 8, 8), init_dim=8)
    idx, g = _random_scene(3, n=800, extent=20)
    coords = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int()
    feats = torch.randn(len(idx), 1, generator=g)
    sets = [torch.tensor([5, 1, 9, 9]), torch.tensor([300, 2, 5])]
    wanted = torch.tensor([9, 300, 1, 5, 2])

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return out

    full = model(feats, coords, 1)
    full[wanted].square().sum().backward()
    reference = grads()
    pred = predict_rows(model, model, feats, coords, 1, sets)
    assert pred.values.shape == (5, 16)  # the sets overlap (row 5): their union, once each
    torch.testing.assert_close(pred[wanted], full[wanted].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pred.detach(), full.detach(), rtol=1e-5, atol=1e-6)
    assert not pred.detach().requires_grad
    pred[wanted].square().sum().backward()
    for a, b in zip(grads(), reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(IndexError, match="did not ask"):
        pred[torch.tensor([0])]
    # full=False: the same rows, without the head on every voxel
    head_rows = []
    hook = model.head.register_forward_hook(lambda module, args, out: head_rows.append(args[0].shape[0]))
    lean = predict_rows(model, model, feats, coords, 1, sets, full=False)
    hook.remove()
    assert head_rows == [5]
    torch.testing.assert_close(lean[wanted], full[wanted].detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="full output"):
        lean.detach()
    # disjoint sets: each is answered with its own block, values and gradients as the full call's
    disjoint = [torch.tensor([7, 3, 11]), torch.tensor([400, 20])]
    pred = predict_rows(model, model, feats, coords, 1, disjoint)
    loss = sum(pred[s].square().sum() * (i + 1) for i, s in enumerate(disjoint)) + pred[torch.tensor([20, 7])].sum()
    loss.backward()
    got = grads()
    full = model(feats, coords, 1)
    (sum(full[s].square().sum() * (i + 1) for i, s in enumerate(disjoint)) + full[torch.tensor([20, 7])].sum()).backward()
    for a, b in zip(got, grads()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    class Plain(torch.nn.Module):  # a registered model that knows nothing of rows
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 4)

        def forward(self, voxel_features, voxel_coords, batch_size):
            self.calls += 1
            return self.lin(voxel_features)

    plain = Plain()
    plain.calls = 0
    assert accepts_rows(model) and not accepts_rows(plain)
    out = predict_rows(plain, plain, feats, coords, 1, sets)
    assert plain.calls == 1  # one forward per step
    torch.testing.assert_close(out[wanted], plain(feats, coords, 1)[wanted])


def test_minkunet_row_order_preserved():
    model = build_model("minkunet18a", in_channels=1, out_channels=8, planes=(8, 8, 8, 8, 8, 8, 8, 8), init_dim=8).eval()
    idx, g = _random_scene(2, n=600, extent=20)
    coords = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int()
    feats = torch.randn(len(idx), 1, generator=g)
    perm = torch.randperm(len(idx), generator=g)
    with torch.no_grad():
        out = model(feats, coords, 1)
        out_p = model(feats[perm], coords[perm], 1)
        again = model(feats, coords, 1)
    assert torch.equal(again, out)
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-4)
    assert out.std() > 0


def _surface_voxels(seed: int) -> np.ndarray:
    """Voxels of a room-like surface set (floor, two walls, a box) at 5 cm: ~13k voxels."""
    rng = np.random.default_rng(seed)
    n = 20000
    pts = np.concatenate([rng.uniform([0, 0, 0], [4, 3, 0.01], (n, 3)), rng.uniform([0, 0, 0], [4, 0.01, 2.5], (n, 3)),
                          rng.uniform([0, 0, 0], [0.01, 3, 2.5], (n, 3)), rng.uniform([1, 1, 0], [2, 2, 1], (n, 3))])
    return batch_coords([voxelize(pts, 0.05).coords])


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs 2 cores to run 2 threads")
def test_spconv_cpu_is_race_free_with_threads():
    """spconv's own scatter_add_cpu races with 2 torch threads (outputs off by 10-25 % of their scale,
    differently per run); with the race-free scatter installed by ensure_spconv_cpu_backward, 2 threads
    are as close to a float64 reference as 1 thread is, on every run. (The float32 gradients of this
    untrained net are themselves ~5 % off the float64 ones: BatchNorm over a mean-square loss is
    ill-conditioned, so the bound compares against float64, not against the 1-thread float32 run.)"""
    import copy

    ensure_spconv_cpu_backward()
    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=64, planes=[8, 16, 32, 64, 32, 32, 24, 24], init_dim=8)
    reference = copy.deepcopy(model).double()
    coords = torch.from_numpy(_surface_voxels(0))
    before = torch.get_num_threads()

    def run(net: torch.nn.Module, threads: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        torch.set_num_threads(threads)
        net.zero_grad()
        out = net.head(net._forward(torch.ones(len(coords), 1, dtype=dtype), coords.int(), 1))
        out.square().mean().backward()
        return out.detach().double(), torch.cat([p.grad.flatten() for p in net.parameters()]).double()

    try:
        ref_out, ref_grad = run(reference, 1, torch.float64)
        for threads in (1, 2, 2):
            out, grad = run(model, threads, torch.float32)
            assert float((out - ref_out).abs().max()) <= 2e-3 * float(ref_out.abs().max()), threads
            assert float((grad - ref_grad).abs().max()) <= 0.15 * float(ref_grad.abs().max()), threads
    finally:
        torch.set_num_threads(before)


def test_spconv_scatter_uses_spconvs_kernel_on_one_thread_and_index_add_on_more(monkeypatch):
    """One thread has no race, so the replacement hands the call to spconv's faster kernel; with two
    it must not. Either way the result is out[idx[i]] += buf[i] (checked against a Python loop)."""
    import numpy as np

    from sas3d.models import spconv_compat

    ensure_spconv_cpu_backward()
    from spconv.pytorch.cppcore import torch_tensor_to_tv

    calls = []
    native = spconv_compat._NATIVE_SCATTER[0]
    monkeypatch.setattr(spconv_compat, "_NATIVE_SCATTER", [lambda *a: (calls.append(1), native(*a))])
    rng = np.random.default_rng(0)
    index = torch.from_numpy(rng.permutation(50)[:30].astype(np.int32))
    buffer = torch.from_numpy(rng.standard_normal((40, 5), dtype=np.float32))  # 10 spare rows, as spconv's buffers
    expected = torch.zeros(50, 5)
    for i, row in enumerate(index.tolist()):
        expected[row] += buffer[i]
    before = torch.get_num_threads()
    try:
        for threads, native_calls in ((1, 1), (2, 1)):
            torch.set_num_threads(threads)
            out = torch.zeros(50, 5)
            spconv_compat._scatter_add_cpu(torch_tensor_to_tv(out), torch_tensor_to_tv(buffer), torch_tensor_to_tv(index))
            assert torch.equal(out, expected), threads
            assert len(calls) == native_calls, threads
    finally:
        torch.set_num_threads(before)


def test_checkpoint_round_trip(tmp_path):
    model = build_model("minkunet18a", in_channels=1, out_channels=16, planes=(8, 8, 16, 16, 8, 8, 8, 8), init_dim=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    idx, _ = _random_scene(3, n=200, extent=32)
    coords = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int()
    opt.zero_grad()
    model(torch.ones(len(idx), 1), coords, 1).square().mean().backward()
    opt.step()
    history = torch.randn(10, 4)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, {"epoch": 1, "recipe": "sas"}, optimizer=opt, extra={"history": history})
    raw = path.read_bytes()
    assert raw[8:9] == b"{"  # safetensors: u64 header length, then a JSON header (no pickle)
    loaded, meta, state = load_checkpoint(path)
    assert meta["epoch"] == 1 and meta["model"]["name"] == "minkunet18a" and meta["model"]["out_channels"] == 16
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(state.extra["history"], history)
    opt2 = torch.optim.Adam(loaded.parameters(), lr=5.0)
    load_optimizer_state(opt2, state)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for pid, entries in s1["state"].items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][pid][key])), (pid, key)
    # given the same gradients, the resumed optimizer steps exactly like the original
    # (gradients are copied because spconv's CPU summation order is not bit-reproducible)
    opt.zero_grad()
    model(torch.ones(len(idx), 1), coords, 1).square().mean().backward()
    for v, v2 in zip(model.parameters(), loaded.parameters()):
        v2.grad = v.grad.clone()
    opt.step()
    opt2.step()
    for v, v2 in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(v, v2)


def test_registry_accepts_new_backbone():
    @register("tiny_linear_test")
    class Tiny(torch.nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.lin = torch.nn.Linear(in_channels, out_channels)

        def forward(self, feats, coords, batch_size):
            return self.lin(feats)

    m = build_model("tiny_linear_test", in_channels=2, out_channels=3)
    assert m(torch.ones(5, 2), torch.zeros(5, 4, dtype=torch.int32), 1).shape == (5, 3)
    from sas3d.errors import ConfigError

    with pytest.raises(ConfigError):
        build_model("no_such_model")


def test_augment_deterministic_and_rotation_rigid():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 3, (2000, 3)).astype(np.float32)
    a = augment(pts, np.random.default_rng(7), AugmentConfig())
    b = augment(pts, np.random.default_rng(7), AugmentConfig())
    c = augment(pts, np.random.default_rng(8), AugmentConfig())
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.shape == pts.shape and np.isfinite(a).all()
    rot_only = AugmentConfig(scale=False, flip=False, elastic=False)
    r = augment(pts, np.random.default_rng(3), rot_only)
    d0 = np.linalg.norm(pts[:200, None] - pts[None, :200], axis=-1)
    d1 = np.linalg.norm(r[:200, None] - r[None, :200], axis=-1)
    np.testing.assert_allclose(d0, d1, atol=1e-4)
    assert not np.allclose(r, pts)
    # elastic distortion moves points smoothly: nearby points move alike, displacement bounded
    el = augment(pts, np.random.default_rng(4), AugmentConfig(rotate=False, scale=False, flip=False))
    disp = el - pts
    assert 0 < np.abs(disp).max() < 3.0
    near = np.linalg.norm(pts[:, None] - pts[None, :50], axis=-1) < 0.05
    i, j = np.nonzero(near)
    assert np.abs(disp[i] - disp[j]).max() < 0.25 * np.abs(disp).max()
