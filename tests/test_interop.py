"""Reading OpenScene/SAS released files (fused .pt, preprocessed .pth) without executing pickled code."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from sas3d.errors import InputError
from sas3d.evaluate.interop import convert_reference_fused, load_reference_fused, load_reference_scene, safe_torch_load
from sas3d.fusion.features import PointFeatures

EXECUTED = []


def _side_effect():
    EXECUTED.append(True)
    return torch.zeros(1)


class Payload:
    """A pickled object whose unpickling would run code."""

    def __reduce__(self):
        return (_side_effect, ())


def test_current_format(tmp_path):
    mask_full = torch.tensor([True, False, True, True, False, False])
    feat = torch.arange(12, dtype=torch.float32).reshape(3, 4).half()
    torch.save({"feat": feat, "mask_full": mask_full}, tmp_path / "scene_0.pt")
    pf = load_reference_fused(tmp_path / "scene_0.pt", 6)
    assert pf.features.dtype == torch.float16 and pf.features.shape == (6, 4)
    np.testing.assert_array_equal(pf.seen.numpy(), mask_full.numpy())
    np.testing.assert_array_equal(pf.features[[0, 2, 3]].numpy(), feat.numpy())  # rows follow point order
    assert not pf.features[[1, 4, 5]].any()


@pytest.mark.parametrize("mask", [torch.tensor([True, False, True, True]), torch.tensor([0, 2, 3])])
def test_legacy_format(tmp_path, mask):
    # feat rows = chunk points (mask_full); 'mask' marks the rows that received a 2D feature
    mask_full = torch.tensor([True, True, False, True, True, False])
    feat = (torch.arange(4, dtype=torch.float32)[:, None] + 1).repeat(1, 3)[..., None]  # trailing singleton axis
    torch.save({"feat": feat, "mask": mask, "mask_full": mask_full}, tmp_path / "old.pt")
    pf = load_reference_fused(tmp_path / "old.pt", 6)
    np.testing.assert_array_equal(pf.seen.numpy(), [True, False, False, True, True, False])
    np.testing.assert_array_equal(pf.features[:, 0].float().numpy(), [1, 0, 0, 3, 4, 0])


def test_numpy_mask_and_numpy1_pickles(tmp_path):
    src = tmp_path / "np.pt"
    torch.save({"feat": torch.ones(2, 3).half(), "mask_full": np.array([True, False, True])}, src)
    assert load_reference_fused(src, 3).seen.tolist() == [True, False, True]
    # numpy 1.x names it numpy.core.multiarray._reconstruct, numpy 2 numpy._core...: rewrite the pickle as the other would
    old = tmp_path / "np1.pt"
    names = (b"numpy._core.multiarray", b"numpy.core.multiarray")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(old, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                written, other = names if names[0] in data else names[::-1]
                assert written in data
                data = data.replace(written, other)
            zout.writestr(info, data)
    assert load_reference_fused(old, 3).seen.tolist() == [True, False, True]


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"feat": torch.zeros(1, 3), "mask_full": torch.tensor([True]), "extra": Payload()}, path)
    with pytest.raises(InputError, match="pickled Python objects") as err:
        load_reference_fused(path, 1)
    assert "_side_effect" in str(err.value) and str(path) in str(err.value)
    assert EXECUTED == []
    obj_array = tmp_path / "obj.pth"
    torch.save((np.array([object()], dtype=object),), obj_array)
    with pytest.raises(InputError, match="pickled Python objects"):
        safe_torch_load(obj_array)


def test_bad_files(tmp_path):
    torch.save({"feat": torch.zeros(3, 2), "mask_full": torch.tensor([True, False, True])}, tmp_path / "rows.pt")
    with pytest.raises(InputError, match="3 rows"):
        load_reference_fused(tmp_path / "rows.pt", 3)
    torch.save({"feat": torch.zeros(2, 2), "mask_full": torch.tensor([True, False, True])}, tmp_path / "n.pt")
    with pytest.raises(InputError, match="scene has 5"):
        load_reference_fused(tmp_path / "n.pt", 5)
    torch.save({"features": torch.zeros(2, 2)}, tmp_path / "keys.pt")
    with pytest.raises(InputError, match="mask_full"):
        load_reference_fused(tmp_path / "keys.pt", 2)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="junk.pt"):
        load_reference_fused(tmp_path / "junk.pt", 2)


def test_convert_and_load_point_features(tmp_path):
    from sas3d.query.similarity import load_point_features
    from sas3d.scene.types import Scene

    feat = torch.randn(2, 5).half()
    torch.save({"feat": feat, "mask_full": torch.tensor([False, True, True])}, tmp_path / "a.pt")
    convert_reference_fused(tmp_path / "a.pt", 3, tmp_path / "a.safetensors")
    pf = PointFeatures.load(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(pf.features[1:].numpy(), feat.numpy())
    assert pf.seen.tolist() == [False, True, True] and pf.metadata["format"] == "openscene"
    scene = Scene("a", np.zeros((3, 3), np.float32), "ply")
    direct = load_point_features(tmp_path / "a.pt", scene)
    np.testing.assert_array_equal(direct.features.numpy(), pf.features.numpy())


def test_reference_scene(tmp_path):
    coords = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    colors = np.array([[-1, -1, -1], [1, 1, 1], [0, 0, 0], [-1, 1, 0]], dtype=np.float64)
    labels = np.array([3, -100, 255, 0], dtype=np.int32)
    torch.save((coords, colors, labels), tmp_path / "scene0011_00_vh_clean_2.pth")
    scene = load_reference_scene(tmp_path / "scene0011_00_vh_clean_2.pth", label_set="scannet20")
    assert scene.name == "scene0011_00" and scene.kind == "openscene" and scene.label_set == "scannet20"
    np.testing.assert_array_equal(scene.points, coords)
    np.testing.assert_array_equal(scene.colors[:2], [[0, 0, 0], [255, 255, 255]])  # (c + 1) * 127.5
    np.testing.assert_array_equal(scene.labels, [3, 255, 255, 0])
    # nuScenes lidar: colours stored as the scalar 0
    torch.save((coords, 0, np.full(4, 255, np.uint8)), tmp_path / "lidar.pth")
    lidar = load_reference_scene(tmp_path / "lidar.pth", label_set="nuscenes16")
    assert lidar.colors is None and (lidar.labels == 255).all()
