"""Capability for any teacher: export probe images, score a model's saved outputs on them (SAS 3.2 Eq. 3-5)."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sas3d.capability import Capability, teacher_class_map
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import prompt_for

CLASSES = ("chair", "table", "otherfurniture")  # otherfurniture: the catch-all, scored 0 and given no probes


class HashEncoder(TextEncoder):
    """Deterministic stand-in text encoder: a random unit vector per string (crc32-seeded)."""

    name = "hash"
    dim = 16

    def encode(self, texts):
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts]
        return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=1)


@pytest.fixture
def hash_encoder(monkeypatch):
    import sas3d.text.encoders

    encoder = HashEncoder()
    monkeypatch.setattr(sas3d.text.encoders, "build_text_encoder", lambda spec="minilm", device="cpu": encoder)
    return encoder


def _export(tmp_path: Path) -> tuple[Path, list[str]]:
    from sas3d.cli import main

    vocab = tmp_path / "three.txt"
    vocab.write_text("\n".join(CLASSES) + "\n")
    probes = tmp_path / "probes"
    base = ["capability", "--vocabulary", str(vocab), "--images-per-class", "2", "--no-progress"]
    assert main(base + ["--export-probes", str(probes)]) == 0
    return probes, base


def _kept_mask(probes: Path, entry: dict) -> np.ndarray:
    """The pseudo mask sas3d kept for a probe (DIR/.sas3d/images/<class>/<stem>.mask.png)."""
    return np.asarray(Image.open(probes / ".sas3d" / "images" / entry["class"] / f"{entry['stem']}.mask.png")) > 0


def _bbox(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    box = np.zeros_like(mask)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return box


def test_export_then_score_precomputed_outputs_through_the_cli(tmp_path, hash_encoder, capsys):
    from sas3d.cli import main

    probes, base = _export(tmp_path)
    capsys.readouterr()
    images = probes / "images"
    manifest = json.loads((images / "manifest.json").read_text())
    # The folder handed to the model: the 4 probe images (2 classes x 2) and the manifest, no mask or label image.
    assert sorted(p.name for p in images.rglob("*")) == ["chair_0000.png", "chair_0001.png", "manifest.json",
                                                         "table_0000.png", "table_0001.png"]
    for png in images.glob("*.png"):
        assert np.asarray(Image.open(png)).shape == (128, 128, 3)  # RGB probes at the procedural default size
    assert [(e["class"], e["index"], e["seed"], e["width"], e["height"]) for e in manifest["images"]] == [
        ("chair", 0, 0, 128, 128), ("chair", 1, 1, 128, 128), ("table", 0, 0, 128, 128), ("table", 1, 1, 128, 128)]
    assert manifest["vocabulary"]["classes"] == list(CLASSES) and manifest["label_set"]["name"] == "scannet20"
    assert manifest["generator"] == "procedural" and manifest["config"]["procedural_size"] == 128

    # Two fake "models" run on the exported images, writing the precomputed:DIR formats by image stem.
    text = {c: hash_encoder.encode([prompt_for(c)])[0].numpy() for c in CLASSES}
    perfect, confuser = tmp_path / "out" / "perfect", tmp_path / "out" / "confuser"
    perfect.mkdir(parents=True)
    confuser.mkdir()
    expected_inter, expected_union = {"chair": 0, "table": 0}, {"chair": 0, "table": 0}
    for entry in manifest["images"]:
        mask = _kept_mask(probes, entry)
        # perfect (dense .npy): the class's text feature on the object, the catch-all's elsewhere
        np.save(perfect / f"{entry['stem']}.npy", np.where(mask[..., None], text[entry["class"]], text["otherfurniture"]))
        # confuser (masks + labels): the object's bounding box called "chair" (tables too); id 0 = no mask
        box = _bbox(mask)
        Image.fromarray(box.astype(np.uint16)).save(confuser / f"{entry['stem']}.png")
        (confuser / f"{entry['stem']}.json").write_text(json.dumps({"1": "chair"}))
        # Hand count for the confuser (Eq. 3-5): on class c's images, its pixels of c vs the mask.
        said_c = box if entry["class"] == "chair" else np.zeros_like(box)
        expected_inter[entry["class"]] += int((said_c & mask).sum())
        expected_union[entry["class"]] += int((said_c | mask).sum())
    assert 0 < expected_inter["chair"] < expected_union["chair"]  # the box is larger than the object

    out = tmp_path / "cap.json"
    argv = ["capability", "--probes", str(probes), "--teacher", f"precomputed:{perfect}", "--teacher",
            f"precomputed:{confuser}", "--teacher", "simulated:lseg", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "SIMULATED" in capsys.readouterr().out
    cap = Capability.load(out)
    assert cap.teachers == ["perfect", "confuser", "simulated:lseg"]  # the names `sas3d fuse` looks up
    assert cap.classes == list(CLASSES)
    np.testing.assert_allclose(cap.scores[0], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(cap.scores[1], [expected_inter["chair"] / expected_union["chair"], 0.0, 0.0], atol=1e-6)  # JSON keeps 6 digits
    assert cap.intersections[1].tolist() == [expected_inter["chair"], 0, 0]
    assert cap.unions[1].tolist() == [expected_union["chair"], expected_union["table"], 0]
    assert cap.images.tolist() == [2, 2, 0]
    assert 0.0 <= cap.scores[2].min() and cap.scores[2, 2] == 0  # the simulated teacher, mixed in, reads the label images
    assert cap.config["teacher_specs"] == {"perfect": f"precomputed:{perfect}", "confuser": f"precomputed:{confuser}",
                                           "simulated:lseg": "simulated:lseg"}
    assert cap.config["probes"]["images"] == 4 and out.with_suffix(".png").is_file()
    assert not list(tmp_path.glob("cap.work"))  # no progress kept unless --workdir is given

    # The rows bind in `sas3d fuse`: scene outputs in folders of the same names, guided by cap.json.
    from test_fusion import write_scannet_scene

    from sas3d.fusion.features import PointFeatures

    scene = tmp_path / "scene"
    write_scannet_scene(scene, np.array([[0.0, 0.0, 1.0], [0.25, 0.25, 1.0], [-0.5, -0.25, 1.0]], np.float32), [np.eye(4)], 1.0)
    for name, cls in (("perfect", "chair"), ("confuser", "table")):
        (tmp_path / "scene_out" / name).mkdir(parents=True)
        np.save(tmp_path / "scene_out" / name / "0.npy", np.broadcast_to(text[cls], (6, 8, HashEncoder.dim)).astype(np.float32))
    fused = tmp_path / "guided.safetensors"
    assert main(["fuse", str(scene), "--teacher", f"precomputed:{tmp_path / 'scene_out' / 'confuser'}", "--teacher",
                 f"precomputed:{tmp_path / 'scene_out' / 'perfect'}", "--capability", str(out), "--labelset",
                 str(tmp_path / "three.txt"), "--frame-stride", "1", "--set", "border_margin=0", "--out", str(fused),
                 "--no-progress"]) == 0
    guided = PointFeatures.load(fused)
    assert guided.metadata["method"] == "guided"
    # perfect (capability 1 on chair, its prediction) outweighs confuser (0 on table, its prediction)
    assert torch.all(guided.weights[:, 1] > guided.weights[:, 0])

    # The export's images/ folder alone works too, and asking for the export's own vocabulary is fine.
    out2 = tmp_path / "cap2.json"
    assert main(["capability", "--probes", str(images), "--teacher", f"precomputed:{perfect}", "--vocabulary",
                 str(tmp_path / "three.txt"), "--out", str(out2), "--no-progress"]) == 0
    np.testing.assert_allclose(Capability.load(out2).scores, [[1.0, 1.0, 0.0]])


def test_missing_prediction_and_other_vocabulary_are_refused_writing_nothing(tmp_path, hash_encoder, capsys):
    from sas3d.cli import main

    probes, _ = _export(tmp_path)
    manifest = json.loads((probes / "images" / "manifest.json").read_text())
    pred = tmp_path / "lseg"
    pred.mkdir()
    for entry in manifest["images"][:3]:  # the model skipped table_0001
        np.save(pred / f"{entry['stem']}.npy", np.ones((8, 8, HashEncoder.dim), np.float32))
    capsys.readouterr()
    out = tmp_path / "cap.json"
    argv = ["capability", "--probes", str(probes), "--teacher", f"precomputed:{pred}", "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "table_0001.npy" in err and "1 of 4 probe images have no prediction" in err and str(pred) in err
    assert not out.exists() and not out.with_suffix(".png").exists() and not (tmp_path / "cap.work").exists()

    np.save(pred / "table_0001.npy", np.ones((8, 8, HashEncoder.dim), np.float32))
    assert main(argv + ["--vocabulary", "indoor"]) == 1
    assert "exported for vocabulary 'three'" in capsys.readouterr().err
    assert main(argv + ["--label-set", "nuscenes16"]) == 1
    assert "exported for label set 'scannet20'" in capsys.readouterr().err
    np.save(pred / "table_0001.npy", np.ones((8, 8, 5), np.float32))
    assert main(argv) == 1
    assert "table_0001.npy: has 5 feature channels" in capsys.readouterr().err
    assert not out.exists()
    assert main(argv[:2] + [str(tmp_path)] + argv[3:]) == 1  # not an export
    assert "probe manifest not found" in capsys.readouterr().err
    shutil.copytree(probes / "images", tmp_path / "copy" / "images")  # the images without the kept masks
    assert main(argv[:2] + [str(tmp_path / "copy")] + argv[3:]) == 1
    assert ".sas3d: not found" in capsys.readouterr().err


def test_export_resumes_after_a_kill_and_refuses_another_setup(tmp_path, monkeypatch, capsys):
    from sas3d.capability.generators import ProceduralGenerator
    from sas3d.cli import main

    calls = []
    original = ProceduralGenerator.generate

    def generate(self, class_name, seed):
        calls.append((class_name, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, class_name, seed)

    monkeypatch.setattr(ProceduralGenerator, "generate", generate)
    (tmp_path / "three.txt").write_text("\n".join(CLASSES) + "\n")
    argv = ["capability", "--export-probes", str(tmp_path / "p"), "--vocabulary", str(tmp_path / "three.txt"),
            "--images-per-class", "2", "--set", "procedural_size=32", "--no-progress"]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    images = tmp_path / "p" / "images"
    assert not (images / "manifest.json").exists()  # an unfinished export has no manifest
    assert sorted(p.name for p in images.iterdir()) == ["chair_0000.png", "chair_0001.png"]
    calls.clear()
    assert main(argv) == 0
    assert calls == [("table", 0), ("table", 1)]  # only what the kill left undone
    assert len(json.loads((images / "manifest.json").read_text())["images"]) == 4
    np.testing.assert_array_equal(np.asarray(Image.open(images / "chair_0001.png")), original(ProceduralGenerator(32), "chair", 1).image)
    capsys.readouterr()
    assert main(argv[:-2] + ["procedural_size=64", "--no-progress"]) == 1
    assert "another config" in capsys.readouterr().err
    assert main(argv + ["--teacher", "simulated:lseg"]) == 1  # teachers belong to scoring


def test_no_prediction_pixels_predict_no_class():
    # A mask teacher's "no mask" pixels are all-zero features. Before: argmax of a zero row = class 0,
    # so they counted as predictions of the vocabulary's first class and deflated its capability.
    text = torch.eye(3)
    fmap = np.zeros((2, 2, 3), np.float32)
    fmap[0, 0] = [0, 0, 1]
    fmap[1, 1] = [0.2, 0.9, 0]
    assert teacher_class_map(fmap, text, 2, 2).tolist() == [[2, -1], [-1, 1]]
    assert teacher_class_map(fmap, text, 4, 4)[:2, :2].tolist() == [[2, 2], [2, 2]]  # nearest resize keeps it


def test_scoring_an_export_counts_what_a_direct_run_counts(tmp_path):
    """Exported probes read back (images from images/, masks from .sas3d/) give the direct run's exact counts."""
    from sas3d.capability import CapabilityConfig, ProceduralGenerator, compute_capability
    from sas3d.capability.probes import export_probes, load_probes, score_probes
    from sas3d.teachers.base import Teacher
    from sas3d.text.labelsets import LabelSet

    class ColourTeacher(Teacher):
        """Calls a pixel 'chair' when red > green, else 'table': depends on the image only."""

        name = "colour"

        def predict(self, frame):
            img = np.asarray(Image.open(frame.color_path)).astype(np.float32)
            chair = img[..., 0] > img[..., 1]
            return np.stack([chair, ~chair], axis=-1).astype(np.float32)

    class OneHot(TextEncoder):
        name, dim = "onehot", 2

        def encode(self, texts):
            return torch.eye(2)[[["a chair in a scene", "a table in a scene"].index(t) for t in texts]]

    vocab = LabelSet("two", ("chair", "table"))
    cfg = CapabilityConfig(images_per_class=3, procedural_size=48, seed_offset=5)
    export_probes(ProceduralGenerator(48), vocab, 3, tmp_path / "probes", config=cfg, progress=False)
    exported = score_probes([ColourTeacher()], load_probes(tmp_path / "probes"), OneHot(), tmp_path / "w1",
                            teacher_names=["colour"], progress=False)
    direct = compute_capability([ColourTeacher()], ProceduralGenerator(48), vocab, 3, OneHot(), tmp_path / "w2",
                                config=cfg, progress=False)
    np.testing.assert_array_equal(exported.intersections, direct.intersections)
    np.testing.assert_array_equal(exported.unions, direct.unions)
    assert exported.intersections.min() > 0 and (exported.intersections < exported.unions).all()  # not a trivial case
    assert exported.config["seed_offset"] == 5 and exported.config["generator"] == "procedural"
