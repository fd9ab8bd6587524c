"""Text encoders (MiniLM, tiny CLIP) and label sets."""

from __future__ import annotations

import string

import pytest
import torch

from sas3d.errors import ConfigError
from sas3d.text.labelsets import available, get_label_set, nuscenes43_mapping, prompt_for


def tiny_clip(projection_dim: int = 24):
    """A random-weight CLIPModel + an in-memory character-level CLIPTokenizer (offline)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=projection_dim,
    )
    return CLIPModel(config).eval(), tokenizer


def test_minilm_unit_norm_and_semantics():
    from sas3d.text.encoders import build_text_encoder

    enc = build_text_encoder("minilm")
    emb = enc.encode([prompt_for("chair"), prompt_for("sofa"), prompt_for("floor"), prompt_for("otherfurniture")])
    assert emb.shape == (4, enc.dim) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2]  # two seats are closer than a seat and the floor


def test_tiny_clip_text_encoder_shape_norm_and_batching():
    from sas3d.text.clip import CLIPTextEncoder

    model, tokenizer = tiny_clip()
    enc = CLIPTextEncoder(model=model, tokenizer=tokenizer, device="cpu", batch_size=2)
    texts = ["a chair in a scene", "a sofa in a scene", "other", "a chair in a scene", "a very long wooden table in a scene"]
    emb = enc.encode(texts)
    assert emb.shape == (5, 24) and enc.dim == 24
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(emb[0], emb[3], atol=1e-5)  # batching/padding does not change a prompt's embedding
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    # Reference: the model's own projected EOS feature for one prompt, normalised.
    ids = tokenizer(["a sofa in a scene"], return_tensors="pt")
    ref = torch.nn.functional.normalize(model.get_text_features(**ids).pooler_output, dim=-1)[0]
    assert torch.allclose(emb[1], ref, atol=1e-5)
    assert enc.encode([]).shape == (0, 24)


def test_clip_encoder_without_weights_is_a_config_error(tmp_path):
    from sas3d.text.encoders import build_text_encoder

    with pytest.raises(ConfigError):
        build_text_encoder(f"clip:{tmp_path / 'no-such-model'}")


@pytest.mark.parametrize("name,count", [("matterport40", 40), ("matterport80", 80), ("matterport160", 160)])
def test_matterport_label_sets(name, count):
    ls = get_label_set(name)
    assert len(ls) == count == len(set(ls.classes))
    assert ls.classes[:4] == ("wall", "door", "ceiling", "floor")  # OpenScene order (most common first)


def test_matterport_sets_are_nested_prefixes():
    k40, k80, k160 = (get_label_set(f"matterport{k}").classes for k in (40, 80, 160))
    assert k80[:40] == k40 and k160[:80] == k80


def test_every_label_set_loads():
    names = available()
    assert {"scannet20", "matterport21", "matterport40", "matterport80", "matterport160", "nuscenes16"} <= set(names)
    for name in names:
        ls = get_label_set(name)
        assert len(ls) > 0 and all(c == c.strip() and c for c in ls.classes)


def test_nuscenes43_mapping():
    mapping = nuscenes43_mapping()
    assert len(mapping) == 43
    assert set(mapping.values()) == set(get_label_set("nuscenes16").classes)
    assert mapping["excavator"] == "construction vehicle" and mapping["lawn"] == "terrain"
