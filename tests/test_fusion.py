"""Multi-view mean fusion, the precomputed teacher and the `sas3d fuse` command."""

import json
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sas3d.errors import InputError
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.multiview import FusionConfig, fuse_maps, fuse_teacher, map_rows
from sas3d.geometry.projection import ProjectionConfig, project_points
from sas3d.scene.types import Frame, Scene
from sas3d.teachers.base import Teacher
from sas3d.teachers.precomputed import PrecomputedTeacher
from sas3d.text.base import TextEncoder

# Tiny camera: 8x6 pixels, fx = fy = 4, principal point (4, 3); points at z = 1 land on pixel (4x + 4, 4y + 3).
W, H = 8, 6
K = np.array([[4.0, 0, 4.0], [0, 4.0, 3.0], [0, 0, 1]])
NO_MARGIN = FusionConfig(ProjectionConfig(border_margin=0))
POINTS = np.array(
    [
        [-0.75, -0.5, 1.0],  # P0: pixel (1, 1) in frame A; outside frame B
        [0.5, 0.25, 1.0],  # P1: pixel (6, 4) in A, (2, 4) in B
        [0.75, 0.5, 1.0],  # P2: pixel (7, 5) in A, (3, 5) in B
        [0.0, 0.0, -1.0],  # P3: behind both cameras
    ],
    dtype=np.float32,
)


def shifted(dx: float) -> np.ndarray:
    pose = np.eye(4)
    pose[0, 3] = dx
    return pose


def map_a() -> np.ndarray:
    """3x4 map (half the frame resolution), cell (r, c) = [10 r + c, 1]."""
    r, c = np.mgrid[0:3, 0:4]
    return np.stack([10 * r + c, np.ones_like(r)], -1).astype(np.float32)


def map_b() -> np.ndarray:
    """12x16 map (twice the frame resolution), cell (r, c) = [100 + r, -c]."""
    r, c = np.mgrid[0:12, 0:16]
    return np.stack([100 + r, -c], -1).astype(np.float32)


def tiny_scene(depth_a: Path | None = None) -> Scene:
    frame_a = Frame(Path("a.jpg"), K, np.eye(4), W, H, depth_path=depth_a)
    frame_b = Frame(Path("b.jpg"), K, shifted(1.0), W, H)
    return Scene("tiny", POINTS, "scannet", frames=[frame_a, frame_b])


def test_mean_by_hand():
    # Nearest by pixel centres: A (w/W = 1/2): P0 (1,1) -> cell (0,0); P1 (6,4) and P2 (7,5) -> cell (2,3).
    # B (w/W = 2): P1 (2,4) -> cell (9,5); P2 (3,5) -> cell (11,7).
    scene = tiny_scene()
    out = fuse_maps(scene, zip(scene.frames, [map_a(), map_b()]), NO_MARGIN, progress=False)
    expected = np.array([[0, 1], [(23 + 109) / 2, (1 - 5) / 2], [(23 + 111) / 2, (1 - 7) / 2], [0, 0]])
    assert out.features.dtype == torch.float16
    np.testing.assert_array_equal(out.features.float().numpy(), expected)
    assert out.seen.tolist() == [True, True, True, False]
    assert out.metadata["num_frames"] == 2 and out.metadata["fusion"] == "mean" and out.metadata["scene"] == "tiny"


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_pixels_without_a_prediction_are_not_views(kernel):
    """A mask teacher paints zeros where it has no mask. In frame A the cell P1 and P2 read (2, 3) is
    zero, and so is P0's cell (0, 0): P1 and P2 are the mean of frame B alone (not halved by a zero
    view), and P0, whose only view holds no prediction, is unseen (not a zero feature labelled class 0)."""
    scene = tiny_scene()
    a = map_a()
    a[2, 3] = 0
    a[0, 0] = 0
    cfg = FusionConfig(ProjectionConfig(border_margin=0), cpu_kernel=kernel)
    out = fuse_maps(scene, zip(scene.frames, [a, map_b()]), cfg, progress=False)
    np.testing.assert_array_equal(out.features.float().numpy(), [[0, 0], [109, -5], [111, -7], [0, 0]])
    assert out.seen.tolist() == [False, True, True, False]
    # a NaN is not "no prediction": it still fails loudly
    a[2, 3, 1] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        fuse_maps(scene, zip(scene.frames, [a, map_b()]), cfg, progress=False)


def test_depth_occludes_a_view(tmp_path):
    """Frame A's depth says P1's pixel is 3 m away (P1 is at 1 m): only frame B's view counts for P1."""
    depth = np.full((H, W), 1000, dtype=np.uint16)
    depth[4, 6] = 3000
    Image.fromarray(depth).save(tmp_path / "a.png")
    scene = tiny_scene(tmp_path / "a.png")
    out = fuse_maps(scene, zip(scene.frames, [map_a(), map_b()]), NO_MARGIN, progress=False)
    np.testing.assert_array_equal(out.features[1].float().numpy(), [109, -5])
    np.testing.assert_array_equal(out.features[2].float().numpy(), [(23 + 111) / 2, (1 - 7) / 2])


def test_nearest_convention_is_nearest_exact():
    """map_rows equals gathering from the map upsampled with interpolate(mode='nearest-exact')."""
    fmap = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    for width, height in [(17, 12), (4, 3), (7, 5)]:
        full = torch.nn.functional.interpolate(fmap, size=(height, width), mode="nearest-exact").reshape(-1)
        pixels = torch.arange(width * height)
        rows = map_rows(pixels, width, height, 7, 5)
        assert torch.equal(fmap.reshape(-1)[rows], full)


@pytest.mark.parametrize("group", [1, 3])
def test_streaming_consumes_lazily(group):
    """fuse_maps pulls one map at a time and keeps no reference to maps of frame groups already fused
    (freed by refcount): at most the group being collected and the one being added are alive."""
    scene = tiny_scene()
    frames = scene.frames * 5
    alive: list[weakref.ref] = []

    def maps():
        for i, frame in enumerate(frames):
            # When map i is requested, every map before the previous group has been released.
            assert sum(r() is not None for r in alive[: max(0, (i // group - 1) * group)]) == 0
            m = map_a() if i % 2 == 0 else map_b()
            alive.append(weakref.ref(m))
            yield frame, m

    out = fuse_maps(scene, maps(), FusionConfig(ProjectionConfig(border_margin=0), frame_group=group), progress=False)
    assert out.metadata["num_frames"] == 10
    np.testing.assert_array_equal(out.features[1].float().numpy(), [66, -2])  # same mean as 2 frames


class ConstantTeacher(Teacher):
    name = "const"

    def __init__(self):
        self.calls = []

    def predict(self, frame):
        self.calls.append(frame.stem)
        return np.full((3, 4, 2), len(self.calls), dtype=np.float32)


def test_fuse_teacher_and_channel_mismatch():
    scene = tiny_scene()
    teacher = ConstantTeacher()
    out = fuse_teacher(scene, teacher, NO_MARGIN, progress=False)
    assert teacher.calls == ["a", "b"]
    np.testing.assert_array_equal(out.features[:3, 0].float().numpy(), [1, 1.5, 1.5])  # P0 seen by frame 1 only
    assert out.metadata["teachers"] == ["const"]
    with pytest.raises(InputError, match="channels"):
        fuse_maps(scene, zip(scene.frames, [map_a(), np.zeros((3, 4, 5), np.float32)]), NO_MARGIN, progress=False)


def test_precomputed_teacher_errors(tmp_path):
    frame = Frame(tmp_path / "color" / "000123.jpg", K, np.eye(4), W, H)
    teacher = PrecomputedTeacher(tmp_path)
    with pytest.raises(InputError, match="000123.npy"):
        teacher.predict(frame)
    np.save(tmp_path / "000123.npy", np.zeros((6, 8), np.float32))
    with pytest.raises(InputError, match=r"\(h, w, C\)"):
        teacher.predict(frame)
    bad = np.zeros((6, 8, 3), np.float32)
    bad[1, 2, 0] = np.nan
    np.save(tmp_path / "000123.npy", bad)
    with pytest.raises(InputError, match="NaN"):
        teacher.predict(frame)
    good = np.arange(6 * 8 * 3, dtype=np.float64).reshape(6, 8, 3)
    np.save(tmp_path / "000123.npy", good)
    out = teacher.predict(frame)
    assert out.dtype == np.float32 and np.array_equal(out, good)
    with pytest.raises(InputError, match="not found"):
        PrecomputedTeacher(tmp_path / "nope")


class HashEncoder(TextEncoder):
    """Deterministic stand-in text encoder: a seeded unit vector per string."""

    name, dim = "hash", 4

    def encode(self, texts):
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=4) for t in texts]
        return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=1)


def test_precomputed_mask_form(tmp_path):
    ids = np.zeros((6, 8), np.uint16)
    ids[:, :4] = 1
    ids[:3, 4:] = 2  # remaining pixels keep id 0, absent from the JSON
    Image.fromarray(ids).save(tmp_path / "7.png")
    (tmp_path / "7.json").write_text(json.dumps({"1": "chair", "2": {"label": "table", "caption": "a wooden table"}}))
    frame = Frame(tmp_path / "7.jpg", K, np.eye(4), W, H)
    with pytest.raises(InputError, match="text encoder"):
        PrecomputedTeacher(tmp_path).predict(frame)
    dense = PrecomputedTeacher(tmp_path, text_encoder=HashEncoder()).predict(frame)
    assert dense.shape == (6, 8, 4)
    assert np.allclose(dense[:, :4], dense[0, 0]) and np.allclose(dense[:3, 4:], dense[0, 4])
    assert not np.allclose(dense[0, 0], dense[0, 4])
    assert np.allclose(np.linalg.norm(dense[0, 0]), 1.0) and np.all(dense[3:, 4:] == 0)


def test_precomputed_masks_unnamed_ids_are_no_prediction_end_to_end(tmp_path):
    """A mask teacher's PNG holds id 7, which its JSON does not name, where frame A sees P1, and id 0
    (no mask) everywhere frame B sees P1: P1 gets no view and is unseen (today's bug: a seen all-zero
    feature, segmented as class 0). P2 is "chair" in both frames. One warning names the file."""
    ids_a = np.ones((H, W), np.uint16)
    ids_a[4, 6] = 7  # P1's pixel in frame A
    ids_b = np.zeros((H, W), np.uint16)
    ids_b[5, 3] = 1  # P2's pixel in frame B
    for stem, ids in (("a", ids_a), ("b", ids_b)):
        Image.fromarray(ids).save(tmp_path / f"{stem}.png")
        (tmp_path / f"{stem}.json").write_text(json.dumps({"1": "chair"}))
    teacher = PrecomputedTeacher(tmp_path, text_encoder=HashEncoder())
    with pytest.warns(UserWarning, match=r"a\.png: segment ids \[7\] are not named") as caught:
        out = fuse_teacher(tiny_scene(), teacher, NO_MARGIN, progress=False)
    assert len([w for w in caught if "not named" in str(w.message)]) == 1
    assert out.seen.tolist() == [True, False, True, False]
    np.testing.assert_allclose(out.features[2].float().numpy(), out.features[0].float().numpy(), atol=1e-3)
    assert float(out.features[1].float().abs().max()) == 0.0


def write_scannet_scene(root: Path, points: np.ndarray, poses: list[np.ndarray], depth_m: float) -> None:
    """A tiny scene in the ScanNet export layout (mesh PLY, color/depth/pose/intrinsic)."""
    from sas3d.scene.ply import write_ply

    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True)
    write_ply(root / "scene0000_00_vh_clean_2.ply", points, faces=np.array([[0, 1, 2]]))
    k4 = np.eye(4)
    k4[:3, :3] = K
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", k4)
    for i, pose in enumerate(poses):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "color" / f"{i}.jpg")
        Image.fromarray(np.full((H, W), int(depth_m * 1000), np.uint16)).save(root / "depth" / f"{i}.png")
        np.savetxt(root / "pose" / f"{i}.txt", pose)


class TwoDimEncoder(HashEncoder):
    """A 2-d text space for the tiny hand-made maps below."""

    name, dim = "two-d", 2

    def encode(self, texts):
        return torch.nn.functional.normalize(torch.ones(len(texts), 2), dim=1)


def test_fuse_cli_end_to_end(tmp_path, capsys, monkeypatch):
    import sas3d.text.encoders
    from sas3d.cli import main

    monkeypatch.setattr(sas3d.text.encoders, "build_text_encoder", lambda spec="minilm", device="cpu": TwoDimEncoder())

    scene_dir, teacher_dir = tmp_path / "scene", tmp_path / "lseg"
    # Points on a wall 1 m in front of both cameras (both frames' depth = 1 m); the last one is
    # behind the wall (2 m), so the depth test hides it.
    pts = np.array([[-0.5, -0.25, 1.0], [0.0, 0.0, 1.0], [0.25, 0.25, 1.0], [0.0, 0.0, 2.0]], np.float32)
    write_scannet_scene(scene_dir, pts, [np.eye(4), shifted(0.1)], depth_m=1.0)
    teacher_dir.mkdir()
    np.save(teacher_dir / "0.npy", np.full((3, 4, 2), 1.0, np.float32))
    np.save(teacher_dir / "1.npy", np.full((12, 16, 2), 3.0, np.float32))
    out = tmp_path / "fused" / "scene.safetensors"
    argv = ["fuse", str(scene_dir), "--teacher", f"precomputed:{teacher_dir}", "--out", str(out),
            "--frame-stride", "1", "--set", "border_margin=0", "--no-progress"]
    assert main(argv) == 0
    fused = PointFeatures.load(out)
    assert fused.seen.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(fused.features.float().numpy(), [[2, 2], [2, 2], [2, 2], [0, 0]])
    assert fused.metadata["teachers"] == ["lseg"] and fused.metadata["config"]["projection"]["border_margin"] == 0
    assert fused.metadata["teacher_identity"] == "precomputed:lseg" and fused.metadata["text_space"] == "two-d"
    assert "3 of 4 points seen" in capsys.readouterr().out

    # A frame without its output: clear error naming the file, nothing written.
    (teacher_dir / "1.npy").unlink()
    out2 = tmp_path / "fused" / "other.safetensors"
    assert main(argv[:5] + [str(out2)] + argv[6:]) == 1
    assert "1.npy" in capsys.readouterr().err
    assert not out2.exists() and not list(out2.parent.glob(".other*"))


def test_fuse_cli_refuses_a_map_that_is_not_in_the_text_space(tmp_path, capsys):
    """A precomputed map with 7 or 512 channels against the 384-d MiniLM space is refused at its first frame,
    naming the file (before: rc=0 and a 7-d file that failed only at query time). Nothing is written."""
    from sas3d.cli import main

    scene_dir = tmp_path / "scene"
    pts = np.array([[-0.5, -0.25, 1.0], [0.0, 0.0, 1.0], [0.25, 0.25, 1.0]], np.float32)
    write_scannet_scene(scene_dir, pts, [np.eye(4)], depth_m=1.0)
    for channels in (7, 512):
        teacher_dir = tmp_path / f"t{channels}"
        teacher_dir.mkdir()
        np.save(teacher_dir / "0.npy", np.ones((3, 4, channels), np.float32))
        out = tmp_path / f"fused{channels}.safetensors"
        argv = ["fuse", str(scene_dir), "--teacher", f"precomputed:{teacher_dir}", "--out", str(out), "--frame-stride", "1",
                "--no-progress"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert str(teacher_dir / "0.npy") in err and f"has {channels} channels" in err and "384-d" in err
        assert not out.exists()


def test_fuse_cli_several_teachers(tmp_path, monkeypatch):
    """Two precomputed teachers: per-teacher mean fusion, then mean and capability-guided combination."""
    import sas3d.text.encoders
    from sas3d.cli import main

    encoder = HashEncoder()
    monkeypatch.setattr(sas3d.text.encoders, "build_text_encoder", lambda spec="minilm", device="cpu": encoder)
    chair, table = encoder.encode(["a chair in a scene", "a table in a scene"]).numpy()
    scene_dir = tmp_path / "scene"
    pts = np.array([[-0.5, -0.25, 1.0], [0.0, 0.0, 1.0], [0.25, 0.25, 1.0]], np.float32)
    write_scannet_scene(scene_dir, pts, [np.eye(4)], depth_m=1.0)
    for name, vec in (("good", chair), ("bad", table)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "0.npy", np.broadcast_to(vec, (6, 8, 4)).astype(np.float32))
    base = ["fuse", str(scene_dir), "--teacher", f"precomputed:{tmp_path / 'good'}", "--teacher",
            f"precomputed:{tmp_path / 'bad'}", "--frame-stride", "1", "--set", "border_margin=0", "--no-progress"]

    assert main(base + ["--fusion", "mean", "--out", str(tmp_path / "mean.safetensors")]) == 0
    mean = PointFeatures.load(tmp_path / "mean.safetensors")
    np.testing.assert_allclose(mean.features.float().numpy(), np.tile((chair + table) / 2, (3, 1)), atol=1e-3)
    assert mean.weights.shape == (3, 2)

    cap = {"teachers": ["bad", "good"], "classes": ["chair", "table"], "scores": [[0.1, 0.1], [0.9, 0.9]]}
    (tmp_path / "cap.json").write_text(json.dumps(cap))
    (tmp_path / "two.txt").write_text("chair\ntable\n")
    base += ["--labelset", str(tmp_path / "two.txt")]
    assert main(base + ["--capability", str(tmp_path / "cap.json"), "--out", str(tmp_path / "guided.safetensors")]) == 0
    guided = PointFeatures.load(tmp_path / "guided.safetensors")
    assert guided.metadata["method"] == "guided"
    # Rows of the capability file are matched by teacher name: "good" (first --teacher) dominates.
    assert torch.all(guided.weights[:, 0] > 0.9)
    np.testing.assert_allclose(guided.features[0].float().numpy(), chair, atol=0.05)


def test_fuse_cli_refuses_capability_that_does_not_fit(tmp_path, monkeypatch, capsys):
    """Capability rows are bound by teacher identity, never by position, and must score the fusion
    vocabulary: a file naming other teachers, other classes, or NaN scores is refused with an error
    naming the file (before: rows taken in order, ["foo", "bar"] silently became the vocabulary,
    NaN scores gave weights 0.541/0.459 without a message). Nothing is written."""
    import sas3d.text.encoders
    from sas3d.cli import main

    encoder = HashEncoder()
    monkeypatch.setattr(sas3d.text.encoders, "build_text_encoder", lambda spec="minilm", device="cpu": encoder)
    scene_dir = tmp_path / "scene"
    write_scannet_scene(scene_dir, np.array([[-0.5, -0.25, 1.0], [0.0, 0.0, 1.0], [0.25, 0.25, 1.0]], np.float32), [np.eye(4)], depth_m=1.0)
    for name in ("pre_a", "pre_b"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "0.npy", np.ones((6, 8, 4), np.float32))
    (tmp_path / "two.txt").write_text("chair\ntable\n")
    base = ["fuse", str(scene_dir), "--teacher", f"precomputed:{tmp_path / 'pre_a'}", "--teacher",
            f"precomputed:{tmp_path / 'pre_b'}", "--frame-stride", "1", "--no-progress", "--labelset", str(tmp_path / "two.txt")]
    cases = {
        "other_teachers": ({"teachers": ["lseg", "seem"], "classes": ["chair", "table"], "scores": [[0.1, 0.2], [0.3, 0.4]]},
                           "teacher 'precomputed:"),
        "other_classes": ({"teachers": ["pre_a", "pre_b"], "classes": ["foo", "bar"], "scores": [[0.1, 0.2], [0.3, 0.4]]},
                          "not the fusion vocabulary"),
        "nan": ({"teachers": ["pre_a", "pre_b"], "classes": ["chair", "table"], "scores": [[float("nan"), 0.2], [0.3, 0.4]]},
                "NaN"),
        "outside_0_1": ({"teachers": ["pre_a", "pre_b"], "classes": ["chair", "table"], "scores": [[1.5, 0.2], [0.3, 0.4]]},
                        r"in \[0, 1\]"),
        # identities: scored in another text space, or a row earned by another teacher of the same name
        "other_text_space": ({"teachers": ["pre_a", "pre_b"], "classes": ["chair", "table"], "scores": [[0.1, 0.2], [0.3, 0.4]],
                              "config": {"text_space": "clip:openai/clip-vit-base-patch16"}},
                             "text space 'clip:openai/clip-vit-base-patch16', but the fusion's text encoder is 'hash'"),
        "other_identity": ({"teachers": ["pre_a", "pre_b"], "classes": ["chair", "table"], "scores": [[0.1, 0.2], [0.3, 0.4]],
                            "config": {"text_space": "hash", "teacher_identities": ["precomputed:pre_a", "clip-dense:openai/x"]}},
                           "row 'pre_b' scores the teacher 'clip-dense:openai/x', but --teacher .* is 'precomputed:pre_b'"),
    }
    for key, (cap, message) in cases.items():
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(cap).replace("NaN", "NaN"))
        out = tmp_path / f"{key}.safetensors"
        assert main(base + ["--capability", str(path), "--out", str(out)]) == 1, key
        err = capsys.readouterr().err
        assert str(path) in err and re.search(message, err), (key, err)
        assert not out.exists()
    # the same file with matching identities is accepted
    good = {"teachers": ["pre_b", "pre_a"], "classes": ["chair", "table"], "scores": [[0.1, 0.2], [0.3, 0.4]],
            "config": {"text_space": "hash", "teacher_identities": ["precomputed:pre_b", "precomputed:pre_a"]}}
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert main(base + ["--capability", str(tmp_path / "good.json"), "--out", str(tmp_path / "good.safetensors")]) == 0
    fused = PointFeatures.load(tmp_path / "good.safetensors")
    assert fused.metadata["teacher_identities"] == ["precomputed:pre_a", "precomputed:pre_b"] and fused.metadata["text_space"] == "hash"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))])
def test_torch_path_matches_numba_kernel(device):
    """The chunked torch accumulation (the GPU path) equals the numba CPU kernel on random data."""
    rng = np.random.default_rng(1)
    points = rng.uniform([-1, -1, 0.5], [1, 1, 3], size=(500, 3)).astype(np.float32)
    frames = [Frame(Path(f"{i}.jpg"), K, shifted(0.1 * i), W, H) for i in range(4)]
    scene = Scene("random", points, "scannet", frames=frames)
    maps = [rng.normal(size=(5, 7, 3)).astype(np.float32) for _ in frames]
    ref = fuse_maps(scene, zip(frames, maps), NO_MARGIN, progress=False)
    cfg = FusionConfig(ProjectionConfig(border_margin=0), chunk_size=16, cpu_kernel="torch")
    out = fuse_maps(scene, zip(frames, maps), cfg, device=device, progress=False)
    assert ref.seen.sum() > 100 and torch.equal(out.seen, ref.seen)
    torch.testing.assert_close(out.features.float(), ref.features.float(), atol=1e-3, rtol=0)


def random_view(rng: np.random.Generator, n: int = 600):
    """A random pose, a depth map with holes, and points near / off its surface, partly outside the image."""
    from tests.test_projection import H as PH, K as PK, W as PW, look_pose, scene_for

    pose = look_pose(rng)
    points, depth = scene_for(pose, rng, n)
    return Frame(Path("r.jpg"), PK, pose, PW, PH), points, depth


@pytest.mark.parametrize("use_depth", [True, False])
@pytest.mark.parametrize("margin", [0, 3])
def test_fused_kernel_matches_project_points_and_gather(use_depth, margin):
    """The numba CPU kernel (projection + lookup + add in one pass) gives exactly the counts and
    float32 sums of project_points + map_rows + index_add (the torch path), maps of several sizes."""
    from sas3d.fusion.accumulate import Accumulator, Projector

    rng = np.random.default_rng(7 + margin)
    views = [random_view(rng) for _ in range(3)]
    # Points whose pixel coordinates are exactly k + 0.5 in the tie frame (fx = fy = 4, z = 1; all
    # values dyadic, so exact): both paths must round half to even.
    tie_k = np.array([[4.0, 0, 32.0], [0, 4.0, 24.0], [0, 0, 1]])
    tie_uv = [(4, 4), (5, 7), (20, 9), (62, 46)]
    ties = np.array([[(u + 0.5 - 32.0) / 4, (v + 0.5 - 24.0) / 4, 1.0] for u, v in tie_uv], np.float32)
    tie_depth = np.ones((48, 64), np.float32)
    tie_frame = Frame(Path("t.jpg"), tie_k, np.eye(4), 64, 48)
    _, tie_pixels = project_points(torch.from_numpy(ties), tie_frame, None, ProjectionConfig(border_margin=0))
    assert tie_pixels.tolist() == [4 * 64 + 4, 8 * 64 + 6, 10 * 64 + 20, 46 * 64 + 62]
    points = np.concatenate([v[1] for v in views] + [ties])
    cfg = ProjectionConfig(border_margin=margin, depth_threshold=0.25, use_depth=use_depth)
    projectors = [Projector(points, torch.device("cpu"), FusionConfig(cfg, cpu_kernel=k, point_order="input")) for k in ("numba", "torch")]
    accs = [Accumulator(projector, chunk_size=64) for projector in projectors]
    frames = [(f, d) for f, _, d in views] + [(tie_frame, tie_depth)]
    for i, (frame, depth) in enumerate(frames):
        visible = [projector.visible(frame, depth if use_depth else None) for projector in projectors]
        assert np.array_equal(visible[0][0], visible[1][0].numpy()) and np.array_equal(visible[0][1], visible[1][1].numpy())
        for h, w in [(48, 64), (5, 7), (17, 33), (96, 128)]:
            fmap = torch.from_numpy(rng.normal(size=(h, w, 6)).astype(np.float32))
            for acc, vis in zip(accs, visible):
                acc.add(frame, vis, fmap)
    numba_acc, torch_acc = accs
    assert torch.equal(numba_acc.count, torch_acc.count)
    assert torch.equal(numba_acc.sum, torch_acc.sum)  # same float32 additions in the same order
    assert (numba_acc.count > 0).sum() > 300 and (numba_acc.count == 0).sum() > 100  # both outcomes exercised
    assert numba_acc.count[-4:-1].min() >= 4  # tie points inside the margin are seen (tie frame, every map size)
    assert torch.equal(numba_acc.mean(), torch_acc.mean())


def test_non_finite_or_fp16_overflow_is_an_input_error():
    scene = tiny_scene()
    for bad in (np.nan, 1e6):  # 1e6: the mean over two views is beyond float16
        fmap = map_a()
        fmap[2, 3, 0] = bad  # the cell P1 and P2 read in frame A
        with pytest.raises(InputError, match="NaN or inf"):
            fuse_maps(scene, zip(scene.frames, [fmap, map_b()]), NO_MARGIN, progress=False)


def test_bad_frame_is_an_input_error():
    """A bad frame (found when it is projected, in the caller's thread) raises an InputError naming the problem."""
    scene = tiny_scene()
    bad = Frame(Path("bad.jpg"), np.eye(2), np.eye(4), W, H)
    with pytest.raises(InputError, match="intrinsics must be 3x3"):
        fuse_maps(scene, zip([scene.frames[0], bad, scene.frames[1]], [map_a(), map_a(), map_b()]), NO_MARGIN, progress=False)
