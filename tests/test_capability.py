"""Capability construction: IoU scoring, resume, generators, SD cross-attention capture, SAM prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.capability import Capability, CapabilityConfig, ProceduralGenerator, compute_capability, mask_counts
from sas3d.capability.generators import GeneratedImage
from sas3d.capability.sam_refine import prompt_points
from sas3d.errors import ConfigError
from sas3d.scene.types import Frame
from sas3d.teachers.base import Teacher
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import LabelSet


class OneHotText(TextEncoder):
    """Text encoder with one axis per known prompt: class k's text feature is e_k."""

    name = "onehot"

    def __init__(self, prompts: list[str]):
        self.prompts = prompts
        self.dim = len(prompts)

    def encode(self, texts):
        return torch.eye(self.dim)[[self.prompts.index(t) for t in texts]]


VOCAB = LabelSet("tiny", ("chair", "table", "otherfurniture"))
TEXT = OneHotText(["a chair in a scene", "a table in a scene", "other"])


class SquareGenerator:
    """Image i of a class: an 8x8 image whose mask is the left i+1 columns (known areas)."""

    name = "square"

    def generate(self, class_name: str, seed: int) -> GeneratedImage:
        mask = np.zeros((8, 8), bool)
        mask[:, : seed + 1] = True
        return GeneratedImage(np.zeros((8, 8, 3), np.uint8), mask)


class HalfTeacher(Teacher):
    """Predicts the image's class (read from the GT label PNG) on columns < `cols`, class 2 elsewhere."""

    def __init__(self, cols: int, fail_after: int | None = None):
        self.name = f"half{cols}"
        self.cols = cols
        self.calls = 0
        self.fail_after = fail_after

    def predict(self, frame: Frame) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        from PIL import Image

        labels = np.asarray(Image.open(frame.label_path)).astype(np.int64)
        cls = int(labels[labels != 255][0])  # scannet20 index of chair=4, table=6
        k = {4: 0, 6: 1}[cls]
        out = np.zeros((4, 4, 3), np.float32)  # half resolution: exercises nearest resizing
        out[:, :, 2] = 1.0
        out[:, : self.cols // 2, 2] = 0.0
        out[:, : self.cols // 2, k] = 1.0
        return out


def test_mask_counts_hand_made():
    a = np.array([[1, 1, 0], [0, 1, 0]], bool)
    b = np.array([[1, 0, 0], [1, 1, 1]], bool)
    assert mask_counts(a, b) == (2, 5)


def test_capability_against_hand_counts(tmp_path):
    # Class images i=0,1: masks are the left 1 and 2 columns (8 and 16 px of 8x8).
    # Teacher half4 claims the left 4 columns (32 px): I = 8+16, U = 32+32 -> 24/64.
    # Teacher half2 claims the left 2 columns (16 px): I = 8+16, U = 16+16 -> 24/32.
    teachers = [HalfTeacher(4), HalfTeacher(2)]
    cap = compute_capability(teachers, SquareGenerator(), VOCAB, 2, TEXT, tmp_path, progress=False)
    assert cap.teachers == ["half4", "half2"]
    np.testing.assert_allclose(cap.scores[:, 0], [24 / 64, 24 / 32])
    np.testing.assert_allclose(cap.scores[:, 1], [24 / 64, 24 / 32])
    assert (cap.scores[:, 2] == 0).all()  # catch-all gets 0 and no images
    assert cap.images.tolist() == [2, 2, 0]
    cap.save(tmp_path / "cap.json")
    again = Capability.load(tmp_path / "cap.json")
    np.testing.assert_allclose(again.scores, cap.scores)
    np.testing.assert_allclose(again.select(["half2"]), cap.scores[1:2])
    assert again.catch_all_index == 2
    with pytest.raises(ConfigError):
        again.select(["missing"])
    # identities travel with the scores: the text space they were measured in, one teacher identity per row
    assert again.text_space == TEXT.identity and again.identity_of("half2") == "half2" and again.identity_of("x") is None


class MaskOnlyTeacher(HalfTeacher):
    """A mask teacher: the image's class on columns < `cols`, NO mask (zero features) elsewhere."""

    def predict(self, frame: Frame) -> np.ndarray:
        out = super().predict(frame)
        out[:, :, 2] = 0.0
        return out


def test_capability_pixels_without_a_prediction_claim_no_class(tmp_path):
    """No-mask pixels (all-zero features) are no prediction, not class 0 ("chair" here): before, they
    were argmax'd to class 0, so every table image's no-mask area counted in chair's union and chair's
    own images had the whole image predicted chair. With 2 of 8 columns masked, chair images 0, 1
    (masks: 1 and 2 columns) give I = 8+16, U = 16+16 -> 0.75, the same as table's."""
    cap = compute_capability([MaskOnlyTeacher(2)], SquareGenerator(), VOCAB, 2, TEXT, tmp_path, progress=False)
    np.testing.assert_allclose(cap.scores[0, :2], [24 / 32, 24 / 32])


def test_resume_after_kill_matches_uninterrupted_and_brute_force(tmp_path):
    gen = ProceduralGenerator(size=32)
    vocab = LabelSet("tiny", ("chair", "table"))
    vocab_text = OneHotText(["a chair in a scene", "a table in a scene"])

    class ColourTeacher(Teacher):
        """Calls a pixel 'chair' when red > green, else 'table' (depends on the image, not the GT)."""

        def __init__(self, fail_after=None):
            self.name, self.calls, self.fail_after = "colour", 0, fail_after

        def predict(self, frame):
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            from PIL import Image

            img = np.asarray(Image.open(frame.color_path)).astype(np.float32)
            chair = img[..., 0] > img[..., 1]
            return np.stack([chair, ~chair], axis=-1).astype(np.float32)

    work = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        compute_capability([ColourTeacher(fail_after=3)], gen, vocab, 3, vocab_text, work, progress=False)
    done = json.loads((work / "progress.json").read_text())["done"]
    assert len(done) == 3
    resumed_teacher = ColourTeacher()
    resumed = compute_capability([resumed_teacher], gen, vocab, 3, vocab_text, work, progress=False)
    assert resumed_teacher.calls == 3  # only the 3 images not scored before the kill
    full = compute_capability([ColourTeacher()], gen, vocab, 3, vocab_text, tmp_path / "full", progress=False)
    np.testing.assert_array_equal(resumed.intersections, full.intersections)
    np.testing.assert_array_equal(resumed.unions, full.unions)
    # Brute force straight from the generator, no files involved.
    for k, cls in enumerate(vocab.classes):
        inter = union = 0
        for i in range(3):
            out = gen.generate(cls, i)
            img = out.image.astype(np.float32)
            pred_k = (img[..., 0] > img[..., 1]) if k == 0 else ~(img[..., 0] > img[..., 1])
            inter += (pred_k & out.mask).sum()
            union += (pred_k | out.mask).sum()
        assert resumed.scores[0, k] == pytest.approx(inter / union)


class RenamedTeacher(HalfTeacher):
    """HalfTeacher(cols) under another teacher's name, with an identity of its own."""

    def __init__(self, cols: int, name: str):
        super().__init__(cols)
        self.name = name

    @property
    def identity(self) -> str:
        return f"half:{self.cols}"


def test_resume_rescores_a_teacher_whose_identity_changed(tmp_path):
    """Progress is kept per teacher name; a teacher of the same name but another identity (another model,
    another simulated profile) is scored again, not served the old counts (before: the old scores came back)."""
    compute_capability([RenamedTeacher(4, "t")], SquareGenerator(), VOCAB, 2, TEXT, tmp_path, progress=False)
    again = compute_capability([RenamedTeacher(2, "t")], SquareGenerator(), VOCAB, 2, TEXT, tmp_path, progress=False)
    np.testing.assert_allclose(again.scores[0, :2], [24 / 32, 24 / 32])  # HalfTeacher(2)'s hand count, not 24/64
    assert json.loads((tmp_path / "progress.json").read_text())["identities"] == {"t": "half:2"}


def test_resume_refuses_other_setup(tmp_path):
    compute_capability([HalfTeacher(4)], SquareGenerator(), VOCAB, 1, TEXT, tmp_path, progress=False)
    other = LabelSet("tiny2", ("table", "chair", "otherfurniture"))
    with pytest.raises(ConfigError):
        compute_capability([HalfTeacher(4)], SquareGenerator(), other, 1, TEXT, tmp_path, progress=False)


def test_procedural_generator_deterministic_and_distinct():
    gen = ProceduralGenerator(size=64)
    a, b = gen.generate("chair", 3), gen.generate("chair", 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8 and a.mask.shape == (64, 64)
    masks = {c: gen.generate(c, 0).mask for c in ("chair", "table", "door", "floor", "curtain", "sink", "person")}
    for c, m in masks.items():
        assert 0.01 < m.mean() < 0.95, c
    assert not np.array_equal(masks["chair"], masks["table"])
    assert not np.array_equal(gen.generate("chair", 0).mask, gen.generate("chair", 1).mask)


def test_prompt_points_at_component_centres():
    m = np.zeros((20, 30), bool)
    m[2:7, 2:7] = True  # 25 px, centre (4, 4)
    m[10:19, 10:19] = True  # 81 px, centre (14, 14)
    m[0:3, 25:28] = True  # 9 px, centre (26, 1)
    m[15, 28] = True  # 1 px: the 4th component is dropped
    assert prompt_points(m, 3) == [(14, 14), (4, 4), (26, 1)]
    assert prompt_points(np.zeros((4, 4), bool)) == []


def _tiny_tokenizer(tmp_path: Path):
    from transformers import CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"] + list(chars) + [c + "</w>" for c in chars]
    merges = ["c h", "ch a", "cha i", "chai r</w>", "r o", "ro o", "roo m</w>"]
    tokens += ["ch", "cha", "chai", "chair</w>", "ro", "roo", "room</w>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=32)


def _tiny_sd_pipeline(tmp_path: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    tokenizer = _tiny_tokenizer(tmp_path)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def test_stable_diffusion_cross_attention_capture(tmp_path):
    from sas3d.capability.diffusion import StableDiffusionGenerator, class_token_positions

    pipe = _tiny_sd_pipeline(tmp_path)
    prompt = "a good photo of a chair in a room"
    positions = class_token_positions(pipe.tokenizer, prompt, "chair")
    ids = pipe.tokenizer(prompt).input_ids
    assert [ids[p] for p in positions] == [pipe.tokenizer.convert_tokens_to_ids("chair</w>")]
    cfg = CapabilityConfig(num_inference_steps=2, guidance_scale=7.0)
    gen = StableDiffusionGenerator(pipe, config=cfg, height=32, width=32)
    out = gen.generate("chair", 0)
    store = gen.last_store
    cross_layers = [n for n in pipe.unet.attn_processors if "attn2" in n]  # diffusers names cross-attention attn2
    assert len(cross_layers) >= 2
    assert store.n_all == 2 * len(cross_layers)  # every cross-attention layer, both steps
    assert sorted(store.last_full) == sorted(cross_layers)  # and never a self-attention layer
    for probs in store.last_full.values():
        assert probs.shape[1] == 32  # tokens (model_max_length)
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(probs.shape[0]))
    assert out.image.shape == (32, 32, 3) and out.image.dtype == np.uint8
    assert out.mask.shape == (32, 32) and out.mask.dtype == bool
    assert 0 < out.mask.sum() < 32 * 32  # min-max normalised > 0.7: never empty, never everything (non-flat map)
    # Processors were restored.
    assert not any(type(p).__name__ == "CrossAttentionRecorder" for p in pipe.unet.attn_processors.values())


def test_sam_refiner_tiny_model():
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    from sas3d.capability.sam_refine import SamRefiner

    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=64,
                             patch_size=16, output_channels=16, window_size=2, global_attn_indexes=[0], mlp_dim=32, num_pos_feats=8)
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)
    model = SamModel(SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(), mask_decoder_config=decoder.to_dict()))
    proc = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    refiner = SamRefiner(model, proc)
    coarse = np.zeros((40, 48), bool)
    coarse[5:20, 5:20] = True
    mask = refiner.refine(np.zeros((40, 48, 3), np.uint8), coarse)
    assert mask.shape == (40, 48) and mask.dtype == bool


def test_capability_cli_with_simulated_teacher(tmp_path, capsys):
    """End to end through the CLI: procedural generator, simulated teacher, JSON + heatmap, resumable."""
    pytest.importorskip("sas3d.teachers.simulated")
    from sas3d.cli import main

    out = tmp_path / "cap.json"
    vocab = tmp_path / "three.txt"  # a vocabulary file: any label-set .txt works
    vocab.write_text("chair\ntable\notherfurniture\n")
    argv = ["capability", "--teacher", "simulated:lseg", "--vocabulary", str(vocab), "--images-per-class", "2",
            "--out", str(out), "--workdir", str(tmp_path / "w"), "--set", "procedural_size=32", "--no-progress"]
    assert main(argv) == 0
    assert "SIMULATED" in capsys.readouterr().out
    cap = Capability.load(out)
    assert cap.teachers == ["simulated:lseg"]
    assert cap.classes == ["chair", "table", "otherfurniture"]
    assert cap.scores.shape == (1, 3) and cap.scores[0, 2] == 0  # otherfurniture = catch-all
    assert 0.0 < cap.scores.mean() <= 1.0
    assert out.with_suffix(".png").is_file()
    first = out.read_text()
    assert main(argv) == 0  # everything already scored: served from progress.json, same result
    assert json.loads(out.read_text())["scores"] == json.loads(first)["scores"]
    assert main(argv[:-3] + ["--set", "procedural_size=32", "--vocabulary", "indoor", "--no-progress"]) == 1  # other setup


def test_bind_accepts_a_vocabulary_without_the_catch_all():
    """SAS gives the catch-all class no capability, so a file from the ``indoor`` vocabulary (ScanNet20
    without otherfurniture, what the pipeline and benchmarks score) binds to a ScanNet20 fusion: the
    catch-all gets 0 as if scored (before: refused with "no score for ['otherfurniture']", which broke
    ``sas3d fuse`` / ``sas3d gaussians lift`` and benchmarks/gaussians.py on the default vocabulary). Any other
    unscored class is still refused."""
    from sas3d.capability.capability import resolve_vocabulary
    from sas3d.errors import InputError
    from sas3d.text.labelsets import get_label_set

    indoor, scannet = resolve_vocabulary("indoor").classes, get_label_set("scannet20").classes
    assert "otherfurniture" not in indoor and set(scannet) - set(indoor) == {"otherfurniture"}  # indoor also has ceiling
    scores = np.linspace(0.1, 0.9, 2 * len(indoor)).reshape(2, len(indoor))
    cap = Capability(["a", "b"], list(indoor), scores, {})
    rows = cap.bind(["b", "a"], [None, None], scannet, None)
    assert rows == ["b", "a"]
    got = cap.scores_for(rows, scannet)
    expected = np.array([[scores[t, indoor.index(c)] if c in indoor else 0.0 for c in scannet] for t in (1, 0)])
    np.testing.assert_array_equal(got, expected)
    assert got[:, scannet.index("otherfurniture")].tolist() == [0.0, 0.0]
    without_chair = [c for c in indoor if c != "chair"]
    cap = Capability(["a", "b"], without_chair, scores[:, : len(without_chair)], {})
    with pytest.raises(InputError, match=r"no score for \['chair'\]"):
        cap.bind(["a", "b"], [None, None], scannet, None)
