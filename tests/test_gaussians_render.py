"""CPU Gaussian rasteriser and lifting against brute-force per-pixel references and hand computations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gaussian_reference import blend_weights, random_scene
from sas3d.gaussians.lift import LiftConfig, lift_maps
from sas3d.gaussians.model import GaussianScene
from sas3d.gaussians.raster import composite, project_gaussians
from sas3d.geometry.projection import ProjectionConfig
from sas3d.scene.types import Frame

W, H = 37, 29  # not multiples of the 16-px tile


def _frame(k, pose=None, width=W, height=H, name="0"):
    from pathlib import Path

    return Frame(color_path=Path(f"/nonexistent/color/{name}.jpg"), intrinsics=k, pose=np.eye(4) if pose is None else pose,
                 width=width, height=height)


K = np.array([[30.0, 0, 17.3], [0, 28.0, 13.9], [0, 0, 1]])


@pytest.mark.parametrize("seed", [0, 1])
def test_composite_matches_brute_force_per_pixel_loop(seed):
    rng = np.random.default_rng(seed)
    gs = random_scene(rng, 60)
    # a stack of nearly opaque Gaussians exercises the T < 1e-4 early stop; two behind the camera are culled
    stack = GaussianScene("s", np.array([[0.1, 0.1, 1.0 + 0.01 * i] for i in range(6)] + [[0, 0, -1.0], [0, 0, 0.01]], np.float32),
                          np.full((8, 3), 0.2, np.float32), np.tile(np.array([[1, 0, 0, 0]], np.float32), (8, 1)),
                          np.full(8, 0.99, np.float32), np.zeros((8, 3), np.float32))
    gs = GaussianScene("t", *(np.concatenate([getattr(gs, a), getattr(stack, a)]) for a in ("means", "scales", "rotations", "opacities", "sh_dc")))
    values = rng.normal(size=(gs.num_gaussians, 4)).astype(np.float32)
    pose = np.eye(4)
    pose[:3, 3] = [0.05, -0.03, -0.1]
    frame = _frame(K, pose)
    image, trans, _ = composite(project_gaussians(gs, frame), values)
    weights, trans_ref = blend_weights(gs, K, pose, W, H)
    np.testing.assert_allclose(image, np.einsum("hwn,nc->hwc", weights, values), atol=2e-5)
    np.testing.assert_allclose(trans, trans_ref, atol=1e-6)
    assert (trans_ref < 0.01).any() and (trans_ref > 0.05).any()  # the test covers opaque and thinner pixels


def test_lift_alpha_equals_hand_computed_weighted_mean():
    """One isotropic Gaussian in front of another, facing the camera: alpha(p) = o exp(-|d|^2 / (2 s^2)),
    with s^2 = (f sigma / z)^2 + 0.3, and the back one is weighted by (1 - alpha_front)."""
    f, sigma = 20.0, 0.05
    k = np.array([[f, 0, 4.0], [0, f, 3.0], [0, 0, 1]])
    gs = GaussianScene("two", np.array([[0, 0, 1.0], [0.05, 0, 2.0]], np.float32), np.full((2, 3), sigma, np.float32),
                       np.array([[1, 0, 0, 0], [1, 0, 0, 0]], np.float32), np.array([0.6, 0.8], np.float32), np.zeros((2, 3), np.float32))
    width, height = 9, 7
    rng = np.random.default_rng(3)
    fmap = rng.normal(size=(height, width, 5)).astype(np.float32)
    u, v = np.meshgrid(np.arange(width), np.arange(height))

    def alpha(i, z, cx):
        s2 = (f * sigma / z) ** 2 + 0.3
        d2 = (u - cx) ** 2 + (v - 3.0) ** 2
        a = np.minimum(0.99, gs.opacities[i] * np.exp(-0.5 * d2 / s2))
        return np.where((d2 / s2 <= 9) & (a >= 1 / 255), a, 0.0)

    a0 = alpha(0, 1.0, 4.0)
    a1 = alpha(1, 2.0, 4.0 + f * 0.05 / 2.0)
    w = [a0, a1 * (1 - a0)]
    expected = np.stack([(wi[..., None] * fmap).sum((0, 1)) / wi.sum() for wi in w])
    cfg = LiftConfig(method="alpha", projection=ProjectionConfig(border_margin=0))
    pf = lift_maps(gs, [(_frame(k, width=width, height=height), fmap)], cfg, progress=False)
    np.testing.assert_allclose(pf.features.float().numpy(), expected, rtol=2e-3, atol=2e-3)  # float16 storage
    assert pf.seen.all()


def test_lift_alpha_over_two_views_and_a_coarser_map_matches_brute_force():
    rng = np.random.default_rng(5)
    gs = random_scene(rng, 25)
    pose2 = np.eye(4)
    pose2[:3, 3] = [0.2, 0.0, 0.1]
    maps, expected_num, expected_den = [], 0.0, 0.0
    for i, pose in enumerate((np.eye(4), pose2)):
        fmap = rng.normal(size=(15, 19, 3)).astype(np.float32)  # half resolution: nearest pixel-centre lookup
        weights, _ = blend_weights(gs, K, pose, W, H)
        rows = ((2 * np.arange(H) + 1) * 15) // (2 * H)
        cols = ((2 * np.arange(W) + 1) * 19) // (2 * W)
        full = fmap[rows][:, cols]
        margin = np.zeros((H, W), bool)
        margin[2:-2, 2:-2] = True  # border margin 2
        weights = weights * margin[..., None]
        expected_num = expected_num + np.einsum("hwn,hwc->nc", weights, full)
        expected_den = expected_den + weights.sum((0, 1))
        maps.append((_frame(K, pose, name=str(i)), fmap))
    pf = lift_maps(gs, maps, LiftConfig(method="alpha", projection=ProjectionConfig(border_margin=2)), progress=False)
    seen = expected_den > 0
    assert pf.seen.numpy().tolist() == seen.tolist()
    np.testing.assert_allclose(pf.features.float().numpy()[seen], expected_num[seen] / expected_den[seen, None], rtol=3e-3, atol=3e-3)


def test_lift_centre_projection_uses_the_rendered_depth_test():
    """A small Gaussian hidden behind a big opaque one is not seen by centre projection; the front one
    reads the pixel its centre lands on."""
    k = np.array([[20.0, 0, 4.0], [0, 20.0, 3.0], [0, 0, 1]])
    gs = GaussianScene("occl", np.array([[0, 0, 1.0], [0, 0, 3.0], [0.1, 0.05, 1.0]], np.float32),
                       np.array([[0.5, 0.5, 0.01], [0.02, 0.02, 0.02], [0.01, 0.01, 0.01]], np.float32),
                       np.tile(np.array([[1, 0, 0, 0]], np.float32), (3, 1)), np.array([0.99, 0.9, 0.05], np.float32),
                       np.zeros((3, 3), np.float32))
    fmap = np.arange(7 * 9 * 2, dtype=np.float32).reshape(7, 9, 2)
    pf = lift_maps(gs, [(_frame(k, width=9, height=7), fmap)],
                   LiftConfig(method="centre", projection=ProjectionConfig(border_margin=0, depth_threshold=0.25)), progress=False)
    assert pf.seen.tolist() == [True, False, True]
    np.testing.assert_array_equal(pf.features[0].float().numpy(), fmap[3, 4])
    np.testing.assert_array_equal(pf.features[2].float().numpy(), fmap[4, 6])  # u = 20 * 0.1 + 4, v = 20 * 0.05 + 3


def test_lift_skips_pixels_without_a_prediction():
    """An all-zero map cell (a mask teacher with no mask there) is no prediction, as in point fusion:
    alpha lifting gives its pixels no weight (hand-computed mean over the predicting pixels only), and
    a Gaussian that only such pixels reach is unseen, not a seen Gaussian with a zero feature."""
    f, sigma = 20.0, 0.05
    k = np.array([[f, 0, 4.0], [0, f, 3.0], [0, 0, 1]])
    # Gaussian 0 at pixel (4, 3); Gaussian 1 far to the right at pixel (4 + 20 * 0.15, 3) = (7, 3), no overlap
    gs = GaussianScene("two", np.array([[0, 0, 1.0], [0.15, 0, 1.0]], np.float32), np.full((2, 3), 0.01, np.float32),
                       np.array([[1, 0, 0, 0], [1, 0, 0, 0]], np.float32), np.array([0.6, 0.8], np.float32), np.zeros((2, 3), np.float32))
    width, height = 9, 7
    fmap = np.zeros((height, width, 3), np.float32)
    fmap[3, 4] = [1.0, 2.0, -1.0]  # Gaussian 0's own pixel predicts; its neighbours do not
    fmap[3, 3] = [3.0, 0.0, 1.0]   # one neighbour (left) predicts too
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    s2 = (f * 0.01 / 1.0) ** 2 + 0.3
    d2 = (u - 4.0) ** 2 + (v - 3.0) ** 2
    a0 = np.minimum(0.99, 0.6 * np.exp(-0.5 * d2 / s2))
    a0 = np.where((d2 / s2 <= 9) & (a0 >= 1 / 255), a0, 0.0)
    assert (a0 > 0).sum() > 2  # Gaussian 0 also covers pixels without a prediction
    predicts = np.abs(fmap).max(-1) > 0
    expected0 = (a0[..., None] * fmap)[predicts].sum(0) / a0[predicts].sum()
    cfg = LiftConfig(method="alpha", projection=ProjectionConfig(border_margin=0))
    pf = lift_maps(gs, [(_frame(k, width=width, height=height), fmap)], cfg, progress=False)
    np.testing.assert_allclose(pf.features[0].float().numpy(), expected0, rtol=2e-3, atol=2e-3)
    assert pf.seen.tolist() == [True, False]
    np.testing.assert_array_equal(pf.features[1].float().numpy(), 0.0)

    # centre projection: a view whose pixel holds no prediction is not a view (mean over the others)
    fmap2 = np.full((height, width, 3), 5.0, np.float32)
    cfg = LiftConfig(method="centre", projection=ProjectionConfig(border_margin=0, depth_threshold=0.25))
    pf = lift_maps(gs, [(_frame(k, width=width, height=height, name="0"), fmap),
                        (_frame(k, width=width, height=height, name="1"), fmap2)], cfg, progress=False)
    assert pf.seen.tolist() == [True, True]
    np.testing.assert_array_equal(pf.features[0].float().numpy(), (fmap[3, 4] + fmap2[3, 4]) / 2)
    np.testing.assert_array_equal(pf.features[1].float().numpy(), fmap2[3, 7])  # its pixel in view 0 predicts nothing
    pf = lift_maps(gs, [(_frame(k, width=width, height=height), fmap)], cfg, progress=False)
    assert pf.seen.tolist() == [True, False]


def test_rendered_mesh_gaussians_cover_what_the_mesh_covers():
    """Face Gaussians of a tilted plane mesh render where the triangle rasteriser sees the surface."""
    from sas3d.gaussians.from_mesh import gaussians_from_mesh
    from sas3d.geometry.raster import rasterize

    n = 30
    xs, ys = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    verts = np.stack([xs.ravel(), ys.ravel(), 2.0 + 0.3 * xs.ravel()], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    faces = np.concatenate([np.stack([idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel()], 1),
                            np.stack([idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()], 1)])
    gs = gaussians_from_mesh(verts, faces)
    k = np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])
    depth, _ = rasterize(verts, faces, k, np.eye(4), 64, 48)
    _, trans, median = composite(project_gaussians(gs, _frame(k, width=64, height=48)), np.zeros((gs.num_gaussians, 1)))
    inner = depth > 0
    assert (trans[inner] < 0.5).mean() > 0.98  # opaque where the mesh is
    np.testing.assert_allclose(median[inner & (median > 0)], depth[inner & (median > 0)], atol=0.03)


def test_label_filt_nyu40_images_are_mapped_and_resized(tmp_path):
    from PIL import Image

    from sas3d.gaussians.semantic import read_label_image
    from sas3d.text.labelsets import nyu40_to_scannet20

    nyu = np.zeros((6, 8), np.uint16)
    nyu[:, 4:] = 5  # NYU40 5 = chair
    nyu[:3, :4] = 1  # wall
    Image.fromarray(nyu).resize((16, 12), Image.NEAREST).save(tmp_path / "7.png")  # label-filt is larger than the view
    frame = _frame(K, width=8, height=6, name="7")
    lab = read_label_image(frame, tmp_path, nyu40=True)
    np.testing.assert_array_equal(lab, nyu40_to_scannet20(nyu.astype(np.int64)))
    assert set(np.unique(lab).tolist()) == {0, 4, 255}  # wall, chair, unknown (NYU40 0)


def test_decode_needs_half_the_weight_from_gaussians_with_features():
    from sas3d.gaussians.semantic import decode, gaussian_scores

    text = torch.eye(3, 4)
    feats = torch.tensor([[0.0, 2.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 0]])
    scores = gaussian_scores(feats, torch.tensor([True, True, False]), text)
    np.testing.assert_allclose(scores, [[0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]], atol=1e-6)  # cosine, then seen
    image = np.array([[[0.1, 0.3, 0.0, 0.6], [0.3, 0.1, 0.0, 0.4]]], np.float32)  # weights already folded in
    assert decode(image).tolist() == [[1, -1]]
