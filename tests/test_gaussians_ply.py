"""3DGS PLY reader: fixtures written with plyfile exactly as the reference 3DGS code / splatfacto export them."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from sas3d.errors import InputError
from sas3d.gaussians import SH_C0, read_gaussian_ply, write_gaussian_ply
from sas3d.gaussians.from_mesh import gaussians_from_mesh, matrix_to_quaternion

N = 5


def _reference_3dgs_ply(path, rng, sh_degree=3, normals=True, byte_order="<"):
    """What graphdeco-inria/gaussian-splatting's GaussianModel.save_ply writes (its attribute order and
    dtype 'f4'), with raw stored values: logit opacity, log scales, unnormalised quaternions."""
    m = {0: 0, 1: 3, 2: 8, 3: 15}[sh_degree]
    xyz = rng.normal(size=(N, 3)).astype(np.float32)
    f_dc = rng.normal(size=(N, 3)).astype(np.float32)
    rest = rng.normal(size=(N, 3, m)).astype(np.float32)  # 3DGS stores features_rest transposed to (N, 3, M)
    logit = rng.normal(size=(N, 1)).astype(np.float32)
    log_scale = rng.normal(size=(N, 3)).astype(np.float32) - 3
    quat = rng.normal(size=(N, 4)).astype(np.float32) * 3
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + [f"f_dc_{i}" for i in range(3)]
    names += [f"f_rest_{i}" for i in range(3 * m)] + ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    parts = [xyz] + ([np.zeros((N, 3), np.float32)] if normals else []) + [f_dc, rest.reshape(N, -1), logit, log_scale, quat]
    elements = np.empty(N, dtype=[(n, "f4") for n in names])
    elements[:] = list(map(tuple, np.concatenate(parts, axis=1)))
    PlyData([PlyElement.describe(elements, "vertex")], byte_order=byte_order).write(str(path))
    return xyz, f_dc, rest, logit[:, 0], log_scale, quat


@pytest.mark.parametrize("sh_degree,normals,byte_order", [(3, True, "<"), (0, False, ">"), (1, True, "<")])
def test_reads_reference_layout_and_activates(tmp_path, sh_degree, normals, byte_order):
    rng = np.random.default_rng(sh_degree)
    xyz, f_dc, rest, logit, log_scale, quat = _reference_3dgs_ply(tmp_path / "point_cloud.ply", rng, sh_degree, normals, byte_order)
    gs = read_gaussian_ply(tmp_path / "point_cloud.ply")
    np.testing.assert_allclose(gs.means, xyz)
    np.testing.assert_allclose(gs.opacities, 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(gs.scales, np.exp(log_scale.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(gs.rotations, quat / np.linalg.norm(quat, axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gs.colors, np.clip(0.5 + SH_C0 * f_dc, 0, 1), rtol=1e-6)
    if sh_degree == 0:
        assert gs.sh_rest is None
    else:  # channel-major f_rest -> (N, M, 3): coefficient j of channel c is f_rest_{c * M + j}
        m = rest.shape[2]
        assert gs.sh_rest.shape == (N, m, 3)
        np.testing.assert_array_equal(gs.sh_rest[:, 1, 2], rest[:, 2, 1])


def test_writer_round_trip_in_reference_order(tmp_path):
    rng = np.random.default_rng(7)
    _reference_3dgs_ply(tmp_path / "a.ply", rng)
    gs = read_gaussian_ply(tmp_path / "a.ply")
    write_gaussian_ply(tmp_path / "b.ply", gs)
    a, b = PlyData.read(str(tmp_path / "a.ply"))["vertex"].data, PlyData.read(str(tmp_path / "b.ply"))["vertex"].data
    assert a.dtype.names == b.dtype.names  # the exact 3DGS property order
    for name in a.dtype.names:
        tol = 1e-5 if name.startswith(("opacity", "scale", "rot")) else 0
        np.testing.assert_allclose(b[name], a[name] if not name.startswith("rot") else
                                   (np.stack([a[f"rot_{i}"] for i in range(4)], 1) /
                                    np.linalg.norm(np.stack([a[f"rot_{i}"] for i in range(4)], 1), axis=1, keepdims=True))[:, int(name[-1])],
                                   rtol=tol, atol=tol)


def test_missing_properties_name_the_file_and_the_properties(tmp_path):
    el = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    PlyData([PlyElement.describe(el, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(InputError) as err:
        read_gaussian_ply(tmp_path / "cloud.ply")
    msg = str(err.value)
    assert "cloud.ply" in msg and "opacity" in msg and "scale_0" in msg and "rot_3" in msg and "'f_dc_0'" not in msg  # red/green/blue stand in for f_dc


@pytest.mark.parametrize("problem", ["nan", "zero_quat", "bad_rest", "not_ply", "truncated"])
def test_malformed_files_raise_input_error(tmp_path, problem):
    path = tmp_path / "bad.ply"
    rng = np.random.default_rng(0)
    _reference_3dgs_ply(path, rng, sh_degree=1)
    data = PlyData.read(str(path))["vertex"].data.copy()
    if problem == "nan":
        data["scale_1"][2] = np.nan
    elif problem == "zero_quat":
        for i in range(4):
            data[f"rot_{i}"][1] = 0
    if problem in ("nan", "zero_quat"):
        PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    elif problem == "bad_rest":
        names = [n for n in data.dtype.names if n != "f_rest_4"]
        from numpy.lib.recfunctions import repack_fields

        PlyData([PlyElement.describe(repack_fields(data[names]), "vertex")]).write(str(path))
    elif problem == "not_ply":
        path.write_text("hello\n")
    else:
        path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="bad.ply"):
        read_gaussian_ply(path)


def test_quaternion_conversion_matches_rotation():
    from scipy.spatial.transform import Rotation

    r = Rotation.random(50, random_state=1)
    q = matrix_to_quaternion(r.as_matrix())
    xyzw = r.as_quat()
    ref = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    ref *= np.where(ref[:, :1] < 0, -1, 1)
    np.testing.assert_allclose(q, ref, atol=1e-9)


def test_face_gaussians_have_the_triangle_covariance(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [3, 3, 1]], np.float64)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    gs = gaussians_from_mesh(v, f, np.full((4, 3), 200, np.uint8), np.array([1, 1, 2, 2]), scale_factor=1.0, min_scale=1e-6)
    for i, tri in enumerate(f):
        p = v[tri]
        d = p - p.mean(0)
        np.testing.assert_allclose(gs.means[i], p.mean(0), atol=1e-6)
        np.testing.assert_allclose(gs.covariances()[i], d.T @ d / 12, atol=1e-6)  # uniform-triangle covariance
    assert gs.labels.tolist() == [1, 2]  # majority of the three vertex labels
    write_gaussian_ply(tmp_path / "g.ply", gs)
    back = read_gaussian_ply(tmp_path / "g.ply")
    np.testing.assert_allclose(back.covariances(), gs.covariances(), atol=1e-6)
    assert back.labels.tolist() == [1, 2]
