"""CLIP text tower as a :class:`TextEncoder` (transformers ``CLIPModel`` + ``CLIPTokenizer``).

Real weights load by model id or local path on a user's machine (e.g. ``openai/clip-vit-base-patch16``,
the backbone LSeg/OpenSeg features live next to); tests build it from a tiny random ``CLIPConfig``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sas3d.errors import ConfigError
from sas3d.text.base import TextEncoder

# One default CLIP for the text space and the CLIP teachers (clip-dense, sam-clip): features of one model
# are only comparable with the text features of the same model. ViT-B/16 is MaskCLIP's backbone.
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"


class CLIPTextEncoder(TextEncoder):
    """``CLIPModel.get_text_features`` (projected EOS token), L2-normalised.

    Either ``CLIPTextEncoder("openai/clip-vit-base-patch32")`` or, with already-built objects,
    ``CLIPTextEncoder(model=clip_model, tokenizer=tokenizer)``; the tokenizer only needs the
    ``tokenizer(texts, padding=True, truncation=True, return_tensors="pt")`` call signature.
    """

    def __init__(
        self,
        model_id_or_path: str | None = None,
        device: str = "cpu",
        *,
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int = 256,
    ):
        if model is None or tokenizer is None:
            if not model_id_or_path:
                raise ConfigError("CLIPTextEncoder needs a model id/path or both model= and tokenizer=")
            from transformers import CLIPModel, CLIPTokenizer

            from sas3d.utils.hub import pretrained_options

            try:
                opts = pretrained_options(model_id_or_path, "CLIP text encoder")
                model = model or CLIPModel.from_pretrained(model_id_or_path, **opts)
                tokenizer = tokenizer or CLIPTokenizer.from_pretrained(model_id_or_path, **opts)
            except OSError as exc:  # missing weights offline, bad path
                raise ConfigError(f"cannot load CLIP model {model_id_or_path!r}: {exc}") from exc
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.name = f"clip:{model_id_or_path or getattr(model.config, 'name_or_path', '') or 'custom'}"
        self.dim = int(model.config.projection_dim)
        # Longer prompts than the position table would crash the text tower; truncate instead.
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @property
    def identity(self) -> str:
        return self.name

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            feats = self.model.get_text_features(**enc).pooler_output  # transformers v5: an output object
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)
