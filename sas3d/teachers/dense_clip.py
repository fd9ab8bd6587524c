"""Training-free dense CLIP teacher (LSeg/OpenSeg class): per-patch CLIP features in the joint text space.

MaskCLIP (Zhou et al. 2022) observation: in CLIP's last ViT block, the value embeddings of the patch
tokens, sent through the attention output projection, the final layer norm and the visual projection,
are dense features aligned with CLIP's text embeddings (query/key attention pools them into the CLS
token only). ``mode="maskclip"`` does that; ``mode="patch"`` instead projects the ordinary last-layer
patch tokens (weaker localisation, kept for comparison).

Real weights load by model id on a user's machine (e.g. ``openai/clip-vit-base-patch16``); the output
lives in that model's text space, so pair it with ``--text-encoder clip:<same id>``. Preprocessing is our
own (resize + CLIP mean/std), no torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sas3d.config import to_dict
from sas3d.errors import ConfigError
from sas3d.scene.types import Frame
from sas3d.teachers.base import Teacher
from sas3d.teachers.cache import maybe_cached
from sas3d.text.clip import DEFAULT_CLIP_MODEL

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class DenseCLIPConfig:
    """Settings of :class:`DenseCLIPTeacher`."""

    model_id: str = DEFAULT_CLIP_MODEL  # MaskCLIP's ViT-B/16 backbone; the `clip` text space's default too
    mode: str = "maskclip"  # "maskclip" (last-layer value embeddings) | "patch" (last-layer patch tokens)
    short_side: int = 224  # input short side in px (CLIP's training resolution); long side keeps the aspect
    upsample: int = 1  # bilinear upsampling factor of the patch grid (features renormalised after)
    batch_size: int = 8  # frames per forward pass


def preprocess(images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (B, 3, h, w) float32 CLIP-normalised at ``size`` = (h, w) (bicubic)."""
    x = torch.stack([torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0 for im in images])
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def input_size(height: int, width: int, short_side: int, patch: int) -> tuple[int, int]:
    """Aspect-preserving size with the short side ``short_side``, each side a multiple of ``patch``."""
    scale = short_side / min(height, width)
    return (max(patch, round(height * scale / patch) * patch), max(patch, round(width * scale / patch) * patch))


class DenseCLIPTeacher(Teacher):
    """Dense CLIP features: ``predict(frame)`` -> (h, w, C) float32 unit vectors on the patch grid.

    ``DenseCLIPTeacher("openai/clip-vit-base-patch16")`` loads real weights; ``model=`` takes a built
    ``CLIPModel`` (or any object with ``vision_model`` and ``visual_projection``).
    """

    def __init__(self, model_id_or_path: str | None = None, device: str = "cpu", config: DenseCLIPConfig | None = None, *, model: Any = None):
        self.config = config or DenseCLIPConfig(**({"model_id": model_id_or_path} if model_id_or_path else {}))
        if self.config.mode not in ("maskclip", "patch"):
            raise ConfigError(f"dense CLIP mode must be 'maskclip' or 'patch', got {self.config.mode!r}")
        if model is None:
            from transformers import CLIPModel

            from sas3d.utils.hub import pretrained_options

            try:
                model = CLIPModel.from_pretrained(self.config.model_id, **pretrained_options(self.config.model_id, "CLIP model"))
            except OSError as exc:
                raise ConfigError(f"cannot load CLIP model {self.config.model_id!r}: {exc}") from exc
        self.model = model.to(device).eval()
        self.device = device
        self.patch = int(model.vision_model.config.patch_size)
        self.dim = int(model.visual_projection.out_features)
        self.name = f"clip-dense-{self.config.model_id}"

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "config": to_dict(self.config), "dim": self.dim}

    @property
    def identity(self) -> str:
        return f"clip-dense:{self.config.model_id}"

    @property
    def text_space(self) -> str:
        return f"clip:{self.config.model_id}"  # = CLIPTextEncoder(model_id).identity

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, h, w, C) unit-norm dense features for same-sized (H, W, 3) uint8 images (CPU tensor)."""
        h, w = images[0].shape[:2]
        size = input_size(h, w, self.config.short_side, self.patch)
        pixels = preprocess(images, size).to(self.device, dtype=next(self.model.parameters()).dtype)
        vm = self.model.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixels, interpolate_pos_encoding=True))
        layers = vm.encoder.layers
        for layer in layers[:-1]:
            x = layer(x, None)
        last = layers[-1]
        if self.config.mode == "maskclip":
            x = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
        else:
            x = last(x, None)
        feats = self.model.visual_projection(vm.post_layernorm(x[:, 1:]))  # drop CLS
        gh, gw = size[0] // self.patch, size[1] // self.patch
        feats = feats.float().reshape(len(images), gh, gw, -1)
        if self.config.upsample > 1:
            feats = F.interpolate(feats.permute(0, 3, 1, 2), scale_factor=self.config.upsample, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        return F.normalize(feats, dim=-1).cpu()

    def predict_batch(self, frames: Sequence[Frame]) -> list[np.ndarray]:
        """Predict several frames, ``config.batch_size`` same-sized images per forward pass."""
        from sas3d.scene.images import read_color

        images = [read_color(f.color_path) for f in frames]
        out: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.shape[:2], []).append(i)
        for idx in by_size.values():
            for start in range(0, len(idx), self.config.batch_size):
                chunk = idx[start : start + self.config.batch_size]
                feats = self.encode_images([images[i] for i in chunk]).numpy()
                for j, i in enumerate(chunk):
                    out[i] = feats[j]
        return out  # type: ignore[return-value]

    def predict(self, frame: Frame) -> np.ndarray:
        return self.predict_batch([frame])[0]


def check_text_space(teacher_dim: int, context: Any, teacher_name: str) -> None:
    """A CLIP-space teacher is only usable with a text encoder of the same width (the same CLIP)."""
    encoder = getattr(context, "text_encoder", None)
    if encoder is not None and int(encoder.dim) != teacher_dim:
        raise ConfigError(
            f"{teacher_name} outputs {teacher_dim}-d CLIP features but the text encoder {getattr(encoder, 'name', '?')} "
            f"is {encoder.dim}-d; use --text-encoder clip:<the same model id>"
        )


def from_spec(argument: str, context: Any) -> Teacher:
    """Registry factory: ``clip-dense:MODEL_ID_OR_PATH`` (default ``openai/clip-vit-base-patch16``)."""
    teacher = DenseCLIPTeacher(argument or None, device=getattr(context, "device", "cpu"))
    check_text_space(teacher.dim, context, teacher.name)
    return maybe_cached(teacher, context)
