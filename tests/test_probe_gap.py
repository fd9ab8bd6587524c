"""Simulated teachers' domain gap between capability probe images and scene frames (probe_gap)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from test_teachers import HashEncoder, make_frame

from sas3d.errors import ConfigError, InputError
from sas3d.scene.types import Frame
from sas3d.teachers.cache import CachedTeacher
from sas3d.teachers.simulated import SimulatedProfile, SimulatedTeacher
from sas3d.text.labelsets import get_label_set

SCANNET = get_label_set("scannet20")
CONFUSIONS = {"chair": {"sofa": 0.5}, "desk": {"table": 0.3, "cabinet": 0.2}, "picture": {"wall": 1.0}, "door": {"wall": 0.4},
              "sink": {"counter": 0.6}, "toilet": {"sink": 0.25}, "window": {"curtain": 0.35}, "bed": {"sofa": 0.7}}
SCOPE = "images"  # what a probe frame's folder layout gives (<work>/images/<class>/<stem>.png)


def profile(gap: float, gap_seed: int = 0, **kw) -> SimulatedProfile:
    # A mask teacher with no per-view noise, dropout, bleed or jitter: each segment's label is its systematic draw.
    return SimulatedProfile(name="gap-test", kind="mask", confusions=CONFUSIONS, min_mask_px=1, seed=4,
                            probe_gap=gap, probe_gap_seed=gap_seed, **kw)


def one_segment_per_class():
    """A 4 x 5 grid of 8x8 squares, one per ScanNet20 class, each its own flat colour; 255 between them."""
    gt = np.full((40, 50), 255, np.int64)
    img = np.zeros((40, 50, 3), np.uint8)
    centres = {}
    for c in range(20):
        r, col = 10 * (c // 5), 10 * (c % 5)
        gt[r + 1 : r + 9, col + 1 : col + 9] = c
        img[r + 1 : r + 9, col + 1 : col + 9] = (13 * c + 5, 200 - 9 * c, 31 * c % 256)
        centres[c] = (r + 5, col + 5)
    return img, gt, centres


def segment_uniform(p: SimulatedProfile, teacher_seed: int, c: int, colour) -> float:
    """The documented systematic-error draw: crc32 of (profile, seed, teacher seed, scope, class, colour // colour_bin)."""
    parts = [p.name, p.seed, teacher_seed, SCOPE, c, *(int(v) // p.colour_bin for v in colour)]
    return zlib.crc32(":".join(str(x) for x in parts).encode()) / 2**32


def test_zero_gap_probes_predict_exactly_like_scenes():
    img, gt, centres = one_segment_per_class()
    teacher = SimulatedTeacher(profile(0.0), HashEncoder(), "scannet20", seed=1)
    scene = teacher.predict_label_map(img, gt, "k", SCOPE, domain="scene")
    probe = teacher.predict_label_map(img, gt, "k", SCOPE, domain="probe")
    assert np.array_equal(scene, probe)
    assert not teacher.probe_shift.any()
    wall, picture = SCANNET.index("wall"), SCANNET.index("picture")
    assert scene[centres[picture]] == wall  # picture -> wall with probability 1, in both domains
    for c, (r, col) in centres.items():  # hand rule: confused iff the segment's uniform < the class's confusion mass
        u = segment_uniform(teacher.profile, 1, c, img[r, col])
        row = CONFUSIONS.get(SCANNET.classes[c], {})
        assert (scene[r, col] != c) == (u < sum(row.values())), SCANNET.classes[c]


def test_gap_moves_probe_confusions_per_class_and_leaves_scenes_alone():
    img, gt, centres = one_segment_per_class()
    gap = 0.5
    base = SimulatedTeacher(profile(0.0), HashEncoder(), "scannet20", seed=1)
    teacher = SimulatedTeacher(profile(gap), HashEncoder(), "scannet20", seed=1)
    scene = teacher.predict_label_map(img, gt, "k", SCOPE, domain="scene")
    assert np.array_equal(scene, base.predict_label_map(img, gt, "k", SCOPE, domain="scene"))  # scenes untouched
    probe = teacher.predict_label_map(img, gt, "k", SCOPE, domain="probe")
    shift = teacher.probe_shift
    assert np.all(np.abs(shift) <= gap) and np.count_nonzero(shift) == 20
    changed = 0
    for c, (r, col) in centres.items():
        name = SCANNET.classes[c]
        row = CONFUSIONS.get(name, {})
        mass = sum(row.values())
        new_mass = min(max(mass + shift[c], 0.0), 1.0)
        u = segment_uniform(teacher.profile, 1, c, img[r, col])
        got = probe[r, col]
        if u >= new_mass:
            assert got == c, name  # not confused on the probe
        elif row:  # the existing targets, each scaled by new_mass / mass
            targets = list(row)
            bounds = np.cumsum(list(row.values())) * new_mass / mass
            assert got == SCANNET.index(targets[int(np.searchsorted(bounds, u, side="right"))]), name
        else:  # a class with no confusion in the scenes: a seeded other class, never itself or the catch-all
            assert got not in (c, SCANNET.catch_all_index, -1), name
        changed += int(got != scene[r, col])
        if got != scene[r, col]:  # only when the uniform falls between the scene and the probe mass
            assert min(mass, new_mass) <= u < max(mass, new_mass), name
    assert changed >= 3  # this seed moves several classes' predictions (non-vacuous)


def test_gap_draw_depends_only_on_profile_and_seed():
    enc = HashEncoder()
    a = SimulatedTeacher(profile(0.2, gap_seed=7), enc).probe_shift
    assert np.array_equal(a, SimulatedTeacher(profile(0.2, gap_seed=7), enc, seed=99).probe_shift)  # teacher seed: no effect
    assert np.array_equal(a, SimulatedTeacher(profile(0.2, gap_seed=7, view_noise={"floor": 0.1}), enc).probe_shift)
    assert not np.allclose(a, SimulatedTeacher(profile(0.2, gap_seed=8), enc).probe_shift)  # another seed, another gap
    assert np.allclose(SimulatedTeacher(profile(0.4, gap_seed=7), enc).probe_shift, 2 * a)  # linear in the magnitude
    assert np.all(np.abs(a) <= 0.2) and a.min() < 0 < a.max()
    with pytest.raises(ConfigError):
        profile(1.5)


def test_frames_carry_their_domain_to_the_teacher_and_the_cache(tmp_path):
    from sas3d.capability.capability import _frame_for
    from sas3d.capability.generators import ProceduralGenerator

    probe_frame, _ = _frame_for(ProceduralGenerator(size=32), "chair", 0, 0, tmp_path / "cap", SCANNET)
    assert probe_frame.domain == "probe"
    img, gt, _ = one_segment_per_class()
    scene_frame = make_frame(tmp_path / "scene", "3", size=(50, 40), label=gt, image=img)
    assert scene_frame.domain == "scene"
    as_probe = Frame(scene_frame.color_path, scene_frame.intrinsics, scene_frame.pose, 50, 40, label_path=scene_frame.label_path, domain="probe")
    teacher = SimulatedTeacher(profile(0.5), HashEncoder(), "scannet20", seed=1)
    scope = scene_frame.color_path.parent.parent.name
    assert np.array_equal(teacher.predict(scene_frame), teacher.predict_labels(img, gt, "3", scope, domain="scene"))
    assert np.array_equal(teacher.predict(as_probe), teacher.predict_labels(img, gt, "3", scope, domain="probe"))
    assert not np.array_equal(teacher.predict(as_probe), teacher.predict(scene_frame))
    with pytest.raises(InputError, match="domain"):
        teacher.predict(Frame(scene_frame.color_path, np.eye(3), np.eye(4), 50, 40, label_path=scene_frame.label_path, domain="sd"))
    cached = CachedTeacher(teacher, tmp_path / "cache")
    scene_out = cached.predict(scene_frame)
    probe_out = cached.predict(as_probe)  # same stem, other domain: not served from the scene frame's file
    assert np.allclose(probe_out, teacher.predict(as_probe), atol=2e-3)
    assert not np.allclose(probe_out, scene_out, atol=2e-3)
