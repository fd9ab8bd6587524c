"""Several teachers fused in one pass over the frames (fuse_teachers_multiview / fuse_frames)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sas3d.scene.images
from sas3d.fusion.multiview import FusionConfig, fuse_teacher, fuse_teachers_multiview, map_rows
from sas3d.geometry.projection import ProjectionConfig, project_points
from sas3d.scene.types import Frame, Scene
from sas3d.teachers.base import Teacher
from tests.test_projection import H, K, W, look_pose, scene_for

PROJECTION = ProjectionConfig(border_margin=2, depth_threshold=0.25)
# (h, w, C) of each teacher's maps: the frame's size, coarser, finer; different channel counts
MAP_SHAPES = [(48, 64, 3), (5, 7, 4), (96, 128, 2)]


class ArrayTeacher(Teacher):
    """Returns a fixed map per frame (keyed by the frame's colour path) and records its calls."""

    def __init__(self, name: str, maps: dict[str, np.ndarray]):
        self.name, self.maps, self.calls = name, maps, []

    def predict(self, frame: Frame) -> np.ndarray:
        self.calls.append(str(frame.color_path))
        return self.maps[str(frame.color_path)]


def random_scene(tmp_path: Path, seed: int = 3):
    """Points on a random depth surface, 5 frames near its pose (4 with a uint16 depth PNG, one
    without depth), and 3 teachers with maps of different sizes, about 30% of cells all-zero
    (no prediction) and the rest random."""
    rng = np.random.default_rng(seed)
    pose0 = look_pose(rng)
    points, depth0 = scene_for(pose0, rng, n=800)
    frames = []
    for i in range(5):
        pose = pose0.copy()
        pose[:3, 3] += rng.normal(scale=0.01, size=3)
        depth_path = None
        if i < 4:
            depth = depth0.copy()
            depth[rng.random(depth.shape) < 0.1] = 0  # extra holes: not seen there
            depth_path = tmp_path / f"{i}.png"
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(depth_path)
        frames.append(Frame(tmp_path / f"{i}.jpg", K, pose, W, H, depth_path=depth_path, depth_scale=1000.0))
    teachers = []
    for t, (h, w, c) in enumerate(MAP_SHAPES):
        maps = {}
        for frame in frames:
            fmap = rng.normal(size=(h, w, c)).astype(np.float32)
            fmap[rng.random((h, w)) < 0.3] = 0
            maps[str(frame.color_path)] = fmap
        teachers.append(ArrayTeacher(f"t{t}", maps))
    return Scene("random", points, "scannet", frames=frames), teachers


def brute_force_mean(scene: Scene, teacher: ArrayTeacher) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: project_points, map_rows, drop all-zero rows, ``total[idx] += rows`` in float32
    (NumPy, same additions in frame order), then the float32 mean as float16."""
    total = count = None
    for frame in scene.frames:
        depth = None if frame.depth_path is None else torch.from_numpy(sas3d.scene.images.read_depth(frame))
        point_idx, pixel_idx = project_points(torch.from_numpy(scene.points), frame, depth, PROJECTION)
        fmap = teacher.maps[str(frame.color_path)]
        h, w, c = fmap.shape
        table = fmap.reshape(h * w, c)
        rows = map_rows(pixel_idx, W, H, w, h).numpy()
        keep = (table[rows] != 0).any(axis=1)
        idx, rows = point_idx.numpy()[keep], rows[keep]
        if total is None:
            total, count = np.zeros((scene.num_points, c), np.float32), np.zeros(scene.num_points, np.int64)
        total[idx] += table[rows]
        count[idx] += 1
    mean = total / np.maximum(count, 1).astype(np.float32)[:, None]
    return mean.astype(np.float16), count > 0


@pytest.mark.parametrize("kernel,group", [("numba", 1), ("numba", 2), ("numba", 4), ("numba", 5), ("torch", 1)])
def test_one_pass_equals_each_teacher_alone(tmp_path, kernel, group):
    """Teachers of different map sizes and channel counts, with no-prediction (all-zero) pixels: the
    one-pass result of each equals its own fuse_teacher run and a brute-force NumPy recount (frame by
    frame), bit for bit, whatever the number of frames whose adds run as one pass (5 frames: groups
    of 2 and 4 end with a partial group)."""
    scene, teachers = random_scene(tmp_path)
    cfg = FusionConfig(PROJECTION, chunk_size=64, cpu_kernel=kernel, frame_group=group)
    together = fuse_teachers_multiview(scene, teachers, cfg, progress=False)
    assert len(together) == len(teachers)
    seen_counts = []
    for teacher, fused in zip(teachers, together):
        alone = fuse_teacher(scene, teacher, cfg, progress=False)
        assert torch.equal(fused.features, alone.features) and torch.equal(fused.seen, alone.seen)
        assert fused.metadata == alone.metadata and fused.metadata["teachers"] == [teacher.name]
        features, seen = brute_force_mean(scene, teacher)
        np.testing.assert_array_equal(fused.features.numpy().view(np.uint16), features.view(np.uint16))
        np.testing.assert_array_equal(fused.seen.numpy(), seen)
        seen_counts.append(int(seen.sum()))
    # The zero pixels matter: the teachers' seen masks differ although they share the visibility.
    assert len(set(seen_counts)) == len(teachers) and min(seen_counts) > 100 and max(seen_counts) < scene.num_points


@pytest.mark.parametrize("group", [2, 5])
def test_frame_group_sums_add_frames_in_order(tmp_path, group):
    """The float32 running sums of grouped adds equal NumPy's frame-by-frame ``total[idx] += rows`` bit
    for bit, on values whose sum depends on the order of the additions (magnitudes 1e-4 .. 1e4; the
    reversed frame order gives other bits, so the check can tell)."""
    from sas3d.fusion.accumulate import Accumulator, FrameGroup, Projector

    scene, _ = random_scene(tmp_path)
    rng = np.random.default_rng(5)
    maps = [(rng.normal(size=(48, 64, 3)) * 10.0 ** rng.uniform(-4, 4, size=(48, 64, 1))).astype(np.float32) for _ in scene.frames]
    projector = Projector(scene.points, torch.device("cpu"), FusionConfig(PROJECTION))
    acc = Accumulator(projector, chunk_size=64)
    visible = []
    for frame in scene.frames:
        depth = None if frame.depth_path is None else sas3d.scene.images.read_depth(frame)
        point_idx, pixel_idx = projector.visible(frame, depth)
        visible.append((point_idx.copy(), pixel_idx.copy()))
    for start in range(0, len(scene.frames), group):
        frames = FrameGroup()
        for frame, vis in zip(scene.frames[start:start + group], visible[start:start + group]):
            frames.append(frame, vis)
        fmaps = [torch.from_numpy(m) for m in maps[start:start + group]]
        for task in acc.add_group_tasks(frames.kernel_arrays(group), fmaps, block=16, tasks=7):
            task()

    def numpy_sums(order):
        total = np.zeros((scene.num_points, 3), np.float32)
        for f in order:
            point_idx, pixel_idx = visible[f]
            rows = map_rows(torch.from_numpy(pixel_idx), W, H, 64, 48).numpy()
            total[point_idx] += maps[f].reshape(-1, 3)[rows]  # distinct points per frame: no repeated index
        return total

    expected = numpy_sums(range(len(scene.frames)))
    np.testing.assert_array_equal(acc.sum.numpy().view(np.uint32), expected.view(np.uint32))
    assert not np.array_equal(numpy_sums(reversed(range(len(scene.frames)))), expected)


def test_frame_group_is_capped_by_the_bytes_of_its_maps():
    """A group holds frame_group frames, fewer when their maps would exceed group_bytes (at least one)."""
    from sas3d.fusion.multiview import frames_per_group

    maps = [torch.zeros(10, 10, 4), torch.zeros(5, 5, 2)]
    frame_bytes = sum(m.numel() * m.element_size() for m in maps)  # 1600 + 200 bytes per frame
    assert frames_per_group(FusionConfig(frame_group=4, group_bytes=10_000), frame_bytes) == 4
    assert frames_per_group(FusionConfig(frame_group=4, group_bytes=3_600), frame_bytes) == 2
    assert frames_per_group(FusionConfig(frame_group=4, group_bytes=100), frame_bytes) == 1


def test_depth_is_read_once_per_frame(tmp_path, monkeypatch):
    """Three teachers, one pass: each frame's depth PNG is decoded once (not once per teacher), and each
    teacher predicts each frame once, frame by frame."""
    scene, teachers = random_scene(tmp_path)
    reads = []
    read_depth = sas3d.scene.images.read_depth

    def counting_read_depth(frame):
        reads.append(str(frame.depth_path))
        return read_depth(frame)

    monkeypatch.setattr(sas3d.scene.images, "read_depth", counting_read_depth)
    fuse_teachers_multiview(scene, teachers, FusionConfig(PROJECTION), progress=False)
    # Once each; the order may vary (the two fusion threads share the decoding).
    assert sorted(reads) == sorted(str(f.depth_path) for f in scene.frames if f.depth_path is not None)
    assert len(reads) == 4
    for teacher in teachers:
        assert teacher.calls == [str(f.color_path) for f in scene.frames]


def test_overlap_runs_each_task_once_drops_it_and_reraises():
    """The background thread and the caller share a batch: every task runs exactly once, none is
    referenced after finish(), and an exception in either thread reaches the caller."""
    import weakref

    from sas3d.fusion.overlap import Overlap

    class Payload:  # stands for a teacher map held by a task
        pass

    overlap = Overlap()
    try:
        runs, payloads = [], []

        def task(k, payload):
            runs.append(k)
            sum(range(20000))  # some work, so both threads take tasks

        tasks = []
        for k in range(200):
            payload = Payload()
            payloads.append(weakref.ref(payload))
            tasks.append(lambda k=k, payload=payload: task(k, payload))
        del payload
        overlap.submit(tasks)
        del tasks
        overlap.finish()
        assert sorted(runs) == list(range(200))
        assert all(ref() is None for ref in payloads)

        def fail():
            raise KeyError("bad map")

        overlap.submit([fail] + [lambda: None] * 10)
        with pytest.raises(KeyError, match="bad map"):
            overlap.finish()
        runs.clear()
        overlap.submit([lambda: runs.append(1)] * 5)  # still usable after an error
        overlap.finish()
        assert runs == [1] * 5
    finally:
        overlap.close()
