"""Stable Diffusion generator with cross-attention pseudo masks (SAS 3.2, Eq. 1-2).

While the pipeline denoises, custom diffusers attention processors record the cross-attention
probabilities ``softmax(QK^T / sqrt(d))`` (Eq. 1, via ``attn.get_attention_scores``) of the class-name
tokens in every cross-attention layer whose map side is in ``attention_resolutions`` (16/32/64 for SD at
512 px; tiny test models fall back to whatever resolutions they have). Following Eq. 2 each map is
divided by its max, then all maps are averaged over layers and steps; the average is min-max normalised
and thresholded (0.7) into a coarse mask, which a :class:`~sas3d.capability.sam_refine.Refiner` turns
into the pseudo mask.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sas3d.capability.capability import CapabilityConfig
from sas3d.capability.generators import GeneratedImage
from sas3d.capability.sam_refine import NoRefiner, Refiner
from sas3d.errors import ConfigError


def class_token_positions(tokenizer: Any, prompt: str, class_name: str) -> list[int]:
    """Positions (in the prompt's token ids, BOS included) of the tokens that spell ``class_name``."""
    ids = list(tokenizer(prompt).input_ids)
    cls_ids = list(tokenizer(class_name, add_special_tokens=False).input_ids)
    for start in range(len(ids) - len(cls_ids), -1, -1):  # last occurrence: the class, not an earlier word
        if cls_ids and ids[start : start + len(cls_ids)] == cls_ids:
            return list(range(start, start + len(cls_ids)))
    raise ConfigError(f"class {class_name!r} is not a token run of prompt {prompt!r}; check prompt_template")


class AttentionStore:
    """Accumulates Eq. 2: the mean over recorded (layer, step) maps of ``map / max(map)``."""

    def __init__(self, token_positions: Sequence[int], latent_hw: tuple[int, int], resolutions: Sequence[int]):
        self.token_positions = list(token_positions)
        self.latent_hw = latent_hw
        self.resolutions = set(resolutions)
        self.sum_selected = torch.zeros(latent_hw)
        self.n_selected = 0
        self.sum_all = torch.zeros(latent_hw)
        self.n_all = 0
        # Last full (HW, tokens) probability map per layer: lets tests check the softmax over tokens.
        self.last_full: dict[str, torch.Tensor] = {}

    def add(self, name: str, probs: torch.Tensor) -> None:
        """``probs``: (HW, L) cross-attention probabilities of the conditional prompt, heads averaged."""
        self.last_full[name] = probs.detach().float().cpu()
        hw = probs.shape[0]
        lat_h, lat_w = self.latent_hw
        h = max(1, round(math.sqrt(hw * lat_h / lat_w)))
        w = hw // h
        m = probs[:, self.token_positions].float().mean(dim=1).reshape(1, 1, h, w)
        m = m / m.max().clamp_min(1e-12)
        m = F.interpolate(m, size=self.latent_hw, mode="bilinear", align_corners=False)[0, 0].cpu()
        self.sum_all += m
        self.n_all += 1
        if h in self.resolutions or w in self.resolutions:
            self.sum_selected += m
            self.n_selected += 1

    def mean_map(self) -> torch.Tensor:
        """The Eq. 2 average (latent resolution); all layers if none has a configured resolution."""
        if self.n_selected:
            return self.sum_selected / self.n_selected
        if self.n_all:
            return self.sum_all / self.n_all
        raise RuntimeError("no cross-attention maps were recorded; does the UNet have cross-attention layers?")


class CrossAttentionRecorder:
    """diffusers attention processor: plain attention that also records cross-attention probabilities."""

    def __init__(self, store: AttentionStore, name: str):
        self.store = store
        self.name = name

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        is_cross = encoder_hidden_states is not None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            b, ch, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, hh * ww).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, seq_len, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (batch*heads, HW, L), Eq. 1
        if is_cross:
            # Under classifier-free guidance the batch is [unconditional, conditional]: keep the last.
            per_image = probs.reshape(batch, attn.heads, probs.shape[1], probs.shape[2])
            self.store.add(self.name, per_image[-1].mean(dim=0))
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if spatial:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, ch, hh, ww)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def coarse_mask(attention: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """Upsample the averaged map to the image, min-max normalise, threshold -> (H, W) bool."""
    m = F.interpolate(attention[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    lo, hi = m.min(), m.max()
    m = (m - lo) / (hi - lo).clamp_min(1e-12)
    return (m > threshold).numpy()


class StableDiffusionGenerator:
    """(class, seed) -> SD image + pseudo mask from cross-attention (+ optional SAM refinement).

    Build with :meth:`from_pretrained` (model id, on a user's machine) or pass a ready
    ``StableDiffusionPipeline`` (tests use a tiny random one).
    """

    def __init__(self, pipeline: Any, refiner: Refiner | None = None, config: CapabilityConfig | None = None,
                 height: int | None = None, width: int | None = None, name: str = "sd"):
        self.pipe = pipeline
        self.refiner = refiner or NoRefiner()
        self.cfg = config or CapabilityConfig()
        self.height = height or self.cfg.image_size
        self.width = width or self.cfg.image_size
        self.name = f"{name}+{self.refiner.name}"
        self.pipe.set_progress_bar_config(disable=True)
        self.last_store: AttentionStore | None = None

    @classmethod
    def from_pretrained(cls, model_id: str, refiner: Refiner | None = None, config: CapabilityConfig | None = None,
                        device: str = "cpu") -> "StableDiffusionGenerator":
        from diffusers import StableDiffusionPipeline

        from sas3d.utils.hub import pretrained_options

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(model_id, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False,
                                                       **pretrained_options(model_id, "Stable Diffusion model")).to(device)
        return cls(pipe, refiner, config, name=f"sd:{model_id}")

    def generate(self, class_name: str, seed: int) -> GeneratedImage:
        pipe, cfg = self.pipe, self.cfg
        prompt = cfg.prompt_template.format(cls=class_name)
        positions = class_token_positions(pipe.tokenizer, prompt, class_name)
        scale = pipe.vae_scale_factor
        store = AttentionStore(positions, (self.height // scale, self.width // scale), cfg.attention_resolutions)
        unet = pipe.unet
        original = unet.attn_processors
        unet.set_attn_processor({name: CrossAttentionRecorder(store, name) for name in original})
        try:
            out = pipe(
                prompt,
                height=self.height,
                width=self.width,
                num_inference_steps=cfg.num_inference_steps,
                guidance_scale=cfg.guidance_scale,
                generator=torch.Generator(device="cpu").manual_seed(int(seed)),
                output_type="np",
            )
        finally:
            unet.set_attn_processor(original)
        self.last_store = store
        image = (np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8)
        coarse = coarse_mask(store.mean_map(), image.shape[:2], cfg.attention_threshold)
        mask = self.refiner.refine(image, coarse)
        return GeneratedImage(image, np.asarray(mask, dtype=bool))
