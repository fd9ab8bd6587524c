"""Instance I/O: ScanNet ground truth (segs.json + aggregation.json, benchmark .txt), proposal readers, generated-room instances."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from sas3d.errors import InputError
from sas3d.instances.readers import load_proposals, write_benchmark_predictions
from sas3d.instances.scannet_gt import (InstanceGroundTruth, read_benchmark_gt, read_scannet_instance_gt,
                                        write_benchmark_gt, write_scannet_annotation)

N = 12


def _scan(tmp_path, groups, seg_indices=None, tsv=None, name="scene0001_00"):
    d = tmp_path / name
    d.mkdir()
    segs = seg_indices if seg_indices is not None else [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    (d / f"{name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"sceneId": name, "segIndices": segs}))
    (d / f"{name}.aggregation.json").write_text(json.dumps({"sceneId": f"scannet.{name}", "segGroups": groups}))
    if tsv is not None:
        (tmp_path / "scannetv2-labels.combined.tsv").write_text(tsv)
    return d


def test_scannet_gt_from_raw_annotation(tmp_path):
    tsv = "id\traw_category\tcategory\tcount\tnyu40id\n1\toffice chair\tchair\t5\t5\n2\tkitchen cabinets\tcabinet\t3\t3\n3\twall\twall\t9\t1\n"
    groups = [
        {"id": 0, "objectId": 0, "label": "office chair", "segments": [0, 1]},
        {"id": 1, "objectId": 1, "label": "kitchen cabinets", "segments": [2]},
        {"id": 2, "objectId": 2, "label": "wall", "segments": [4, 3]},
        {"id": 3, "objectId": 3, "label": "office chair", "segments": [3]},  # overlaps the wall: the later group wins, as in ScanNet's export
    ]
    d = _scan(tmp_path, groups, tsv=tsv)
    gt = read_scannet_instance_gt(d, num_points=N)  # the label map is found one folder up
    expected = [5001, 5001, 5001, 5001, 3002, 3002, 5004, 5004, 1003, 1003, 0, 0]
    assert gt.ids.tolist() == expected
    assert gt.label_ids.tolist() == [e // 1000 for e in expected]


def test_scannet_gt_needs_a_label_map_for_raw_categories(tmp_path):
    d = _scan(tmp_path, [{"objectId": 0, "label": "office chair", "segments": [0]}])
    with pytest.raises(InputError, match="aggregation.json.*not NYU40 class names.*scannetv2-labels"):
        read_scannet_instance_gt(d)
    # NYU40 names need no map (the generated rooms use them)
    d2 = _scan(tmp_path, [{"objectId": 4, "label": "chair", "segments": [0]}, {"objectId": 5, "label": "refridgerator", "segments": [1]}],
               name="scene0002_00")
    assert read_scannet_instance_gt(d2).ids[:4].tolist() == [5005, 5005, 24006, 24006]


@pytest.mark.parametrize("what, groups, segs, match", [
    ("no segIndices", [], [], "segs.json: has no 'segIndices'"),
    ("bad group", [{"objectId": "x", "label": "chair", "segments": [0]}], None, r"aggregation.json: segGroups\[0\] needs an integer"),
    ("size", [{"objectId": 0, "label": "chair", "segments": [0]}], [0, 0, 1], "covers 3 vertices but the scene has 12"),
])
def test_scannet_gt_errors_name_the_file(tmp_path, what, groups, segs, match):
    d = _scan(tmp_path, groups, seg_indices=segs)
    with pytest.raises(InputError, match=match):
        read_scannet_instance_gt(d, num_points=N)


def test_scannet_gt_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="segs.json"):
        read_scannet_instance_gt(tmp_path)
    d = _scan(tmp_path, [])
    (d / "scene0001_00.aggregation.json").write_text("{not json")
    with pytest.raises(InputError, match="aggregation.json: not a readable JSON"):
        read_scannet_instance_gt(d)


def test_benchmark_gt_round_trip_and_annotation_writer(tmp_path):
    inst = np.array([0, 1, 1, 2, 2, 2, 0, 3])
    nyu = np.array([0, 5, 5, 7, 7, 7, 0, 1])
    write_scannet_annotation(tmp_path, tmp_path.name, inst, nyu)
    gt = read_scannet_instance_gt(tmp_path, num_points=8)
    assert gt.ids.tolist() == [0, 5001, 5001, 7002, 7002, 7002, 0, 1003]
    write_benchmark_gt(tmp_path / "gt.txt", gt)
    assert read_benchmark_gt(tmp_path / "gt.txt").ids.tolist() == gt.ids.tolist()
    assert read_scannet_instance_gt(tmp_path / "gt.txt", num_points=8).ids.tolist() == gt.ids.tolist()
    (tmp_path / "bad.txt").write_text("1\nchair\n")
    with pytest.raises(InputError, match="bad.txt: not a ScanNet instance ground-truth file"):
        read_benchmark_gt(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="exactly one valid label"):
        write_scannet_annotation(tmp_path, "x", np.array([1, 1]), np.array([5, 7]))


# ---------------------------------------------------------------------------------------------- proposals

MASKS = np.array([[1, 1, 0, 0, 0, 1], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=bool)  # (P, N) with N = 6


def _check(props, scores=None, labels=None):
    assert props.masks.shape == MASKS.shape
    np.testing.assert_array_equal(props.masks.toarray(), MASKS)
    np.testing.assert_allclose(props.scores, scores if scores is not None else np.ones(3))
    if labels is None:
        assert props.labels is None
    else:
        assert props.labels.tolist() == labels


def test_benchmark_prediction_format_round_trip(tmp_path):
    txt = write_benchmark_predictions(tmp_path / "pred", "scene0001_00", MASKS, np.array([5, 7, 3]), np.array([0.9, 0.5, 0.25]))
    assert txt.read_text().splitlines()[0] == "pred_mask/scene0001_00_000.txt 5 0.900000"
    _check(load_proposals(txt, 6), [0.9, 0.5, 0.25], [5, 7, 3])


def test_benchmark_prediction_errors(tmp_path):
    write_benchmark_predictions(tmp_path, "s", MASKS, np.array([5, 7, 3]), np.ones(3))
    with pytest.raises(InputError, match=r"s_000.txt: has 6 lines but the scene has 7"):
        load_proposals(tmp_path / "s.txt", 7)
    (tmp_path / "bad.txt").write_text("pred_mask/s_000.txt chair 0.5\n")
    with pytest.raises(InputError, match=r"bad.txt: line 1: expected '<mask file> <label id> <confidence>'"):
        load_proposals(tmp_path / "bad.txt", 6)
    (tmp_path / "missing.txt").write_text("pred_mask/nope.txt 5 0.5\n")
    with pytest.raises(InputError, match=r"missing.txt: line 1: mask file pred_mask/nope.txt not found"):
        load_proposals(tmp_path / "missing.txt", 6)


def test_openmask3d_masks_pt(tmp_path):
    # OpenMask3D saves torch.save(masks.astype(np.float16)) with one column per mask: (N, P).
    torch.save(MASKS.T.astype(np.float16), tmp_path / "scene0001_00_masks.pt")
    _check(load_proposals(tmp_path / "scene0001_00_masks.pt", 6))


def test_prediction_dict_pt_and_npz(tmp_path):
    torch.save({"pred_masks": torch.from_numpy(MASKS.T.copy()), "pred_scores": torch.tensor([0.3, 0.2, 0.1]),
                "pred_classes": torch.tensor([5, 7, 39])}, tmp_path / "p.pt")
    _check(load_proposals(tmp_path / "p.pt", 6), [0.3, 0.2, 0.1], [5, 7, 39])
    np.savez(tmp_path / "p.npz", masks=MASKS.astype(np.uint8), scores=np.array([1.0, 0.5, 0.2]))
    _check(load_proposals(tmp_path / "p.npz", 6), [1.0, 0.5, 0.2])
    np.savez(tmp_path / "t.npz", masks=MASKS.T)  # (N, P) is recognised from the point count
    _check(load_proposals(tmp_path / "t.npz", 6))


def test_instance_id_npy(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([1, 1, 2, 2, 3, 0]))
    props = load_proposals(tmp_path / "ids.npy", 6)
    np.testing.assert_array_equal(props.masks.toarray(), [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]])


class Evil:  # unpickling this would run code
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("name, make, match", [
    ("evil.pt", lambda p: torch.save({"pred_masks": Evil()}, p), "evil.pt: contains pickled Python objects"),
    ("evil.npy", lambda p: np.save(p, np.array([Evil()], dtype=object), allow_pickle=True), "evil.npy: not a readable .npy of a plain array"),
    ("nokey.npz", lambda p: np.savez(p, foo=MASKS), "nokey.npz: no mask array"),
    ("shape.npz", lambda p: np.savez(p, masks=np.ones((3, 5))), r"shape.npz: 'masks' has shape \(3, 5\) but the scene has 6 points"),
    ("nan.npz", lambda p: np.savez(p, masks=MASKS, scores=np.array([1.0, np.nan, 0.0])), "nan.npz: 'scores' contains NaN"),
    ("count.npz", lambda p: np.savez(p, masks=MASKS, scores=np.ones(2)), "count.npz: 'scores' has 2 entries for 3 masks"),
    ("junk.pt", lambda p: p.write_bytes(b"not a torch file"), "junk.pt: "),  # (interop words this as a pickle refusal)
    ("x.ply", lambda p: p.write_text("ply"), "x.ply: unknown proposal format"),
])
def test_malformed_proposal_files_name_the_file(tmp_path, name, make, match):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError, match=match):
        load_proposals(path, 6)
    assert pickle  # the Evil payload is never unpickled by the readers


# ---------------------------------------------------------------------------------------------- generated rooms

def test_generated_rooms_carry_instances():
    from sas3d.demo.rooms import PROP, generate_room
    from sas3d.text.labelsets import get_label_set

    room = generate_room(3, "office")
    inst, lab = room.instances, room.labels
    assert inst.shape == lab.shape and (inst[lab == PROP] == 0).all() and (inst[lab != PROP] > 0).all()
    classes = get_label_set("scannet20").classes
    per_class = {}
    for i in np.unique(inst[inst > 0]):
        labels = np.unique(lab[inst == i])
        assert len(labels) == 1  # one class per instance
        per_class[classes[labels[0]]] = per_class.get(classes[labels[0]], 0) + 1
    for name in ("chair", "desk", "table", "door", "window", "bookshelf", "picture", "cabinet"):
        assert per_class.get(name, 0) == room.objects.count(name), name  # one instance per placed object
    assert per_class["wall"] == 4 and per_class["floor"] == 1


def test_generated_room_annotation_reads_back(tmp_path):
    from sas3d.demo.rooms import generate_room
    from sas3d.text.labelsets import NYU40_TO_SCANNET20_IDS

    room = generate_room(7, "kitchen")
    nyu = np.where(room.labels < 20, np.asarray(NYU40_TO_SCANNET20_IDS)[np.clip(room.labels, 0, 19)], 0)
    write_scannet_annotation(tmp_path, tmp_path.name, room.instances, nyu)
    gt = read_scannet_instance_gt(tmp_path, num_points=len(room.vertices))
    np.testing.assert_array_equal(gt.ids % 1000, room.instances)
    np.testing.assert_array_equal(gt.label_ids, nyu * (room.instances > 0))
    assert isinstance(gt, InstanceGroundTruth)


def test_write_room_writes_scannet_instance_annotation(tmp_path):
    from sas3d import load_scene
    from sas3d.demo.rooms import generate_room, write_room
    from sas3d.evaluate.instance_eval import scene_gt

    room = generate_room(11, "bedroom")
    write_room(room, tmp_path / "scene0042_00", "scene0042_00", n_views=1, width=32, height=24, seed=0)
    scene = load_scene(tmp_path / "scene0042_00")
    gt = scene_gt(scene)  # read like any ScanNet scan: segs.json + aggregation.json next to the mesh
    np.testing.assert_array_equal(gt.ids % 1000, room.instances)
    assert (gt.ids[room.instances > 0] >= 1000).all()
