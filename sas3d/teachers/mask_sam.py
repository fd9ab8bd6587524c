"""Mask teacher (SEEM class) from SAM automatic masks labelled by CLIP, aligned via text (SAS 3.1).

Pipeline per image:
1. SAM "everything" mode: a regular grid of single positive point prompts; each gives 3 candidate
   masks with predicted IoU. Keep masks with predicted IoU >= ``pred_iou_thresh`` and stability score
   >= ``stability_score_thresh``, then greedy box NMS (SAM automatic-mask-generator defaults).
2. Each mask's bounding-box crop (outside-mask pixels set to the crop's mean colour, padded square) is
   embedded by CLIP's image tower and labelled with the vocabulary class of highest cosine similarity
   to CLIP text embeddings of the class prompts.
3. Masks painted largest first (smaller masks on top) into a segment-id map, captioned, and turned
   into a dense map in the SHARED text space by :func:`sas3d.teachers.alignment.masks_to_dense`.

Real weights load by ids on a user's machine (``facebook/sam-vit-base``, ``openai/clip-vit-base-patch16``).
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
from sas3d.teachers.alignment import masks_to_dense
from sas3d.teachers.base import Teacher
from sas3d.teachers.cache import maybe_cached
from sas3d.text.clip import DEFAULT_CLIP_MODEL
from sas3d.teachers.captioner import Captioner, HFCaptioner, OfflineCaptioner
from sas3d.teachers.dense_clip import preprocess as clip_preprocess
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import get_label_set, prompt_for

SAM_MEAN = (123.675, 116.28, 103.53)  # SAM pixel normalisation (0-255 scale)
SAM_STD = (58.395, 57.12, 57.375)


@dataclass
class SamClipConfig:
    """Settings of :class:`SamClipTeacher` (defaults: SAM's automatic mask generator)."""

    sam_model_id: str = "facebook/sam-vit-base"
    clip_model_id: str = DEFAULT_CLIP_MODEL  # the `clip` text space's default too
    points_per_side: int = 32  # SAM AMG default
    points_per_batch: int = 64  # SAM AMG default
    pred_iou_thresh: float = 0.88  # SAM AMG default
    stability_score_thresh: float = 0.95  # SAM AMG default
    stability_score_offset: float = 1.0  # SAM AMG default
    mask_threshold: float = 0.0  # SAM logit threshold
    box_nms_thresh: float = 0.7  # SAM AMG default
    min_mask_area: int = 0  # px at output resolution (SAM AMG default 0 = keep all)
    output_long_side: int = 320  # masks/feature map resolution (long side, px); fusion resamples anyway
    clip_batch_size: int = 32
    captioner: str = "offline"  # "offline" | "none" | "hf:<image-to-text model id>" (paper: TAP)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy NMS over (n, 4) [x0, y0, x1, y1] boxes; returns kept indices by descending score."""
    order = torch.argsort(scores, descending=True).tolist()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    keep: list[int] = []
    for i in order:
        if keep:
            k = torch.tensor(keep)
            x0 = torch.maximum(boxes[k, 0], boxes[i, 0])
            y0 = torch.maximum(boxes[k, 1], boxes[i, 1])
            x1 = torch.minimum(boxes[k, 2], boxes[i, 2])
            y1 = torch.minimum(boxes[k, 3], boxes[i, 3])
            inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
            iou = inter / (area[k] + area[i] - inter).clamp(min=1e-9)
            if bool((iou > threshold).any()):
                continue
        keep.append(i)
    return keep


def build_captioner(spec: str, device: str = "cpu") -> Captioner | None:
    """``offline`` | ``none`` | ``hf:<model id>``."""
    if spec == "none":
        return None
    if spec == "offline":
        return OfflineCaptioner()
    if spec.startswith("hf:"):
        return HFCaptioner(spec[3:], device=device)
    raise ConfigError(f"unknown captioner {spec!r}; use offline, none or hf:<model id>")


class SamClipTeacher(Teacher):
    """SAM masks + CLIP labels -> captions -> shared-text-space dense map (a SEEM-class teacher)."""

    def __init__(
        self,
        text_encoder: TextEncoder,
        vocabulary: Sequence[str] | str = "scannet20",
        device: str = "cpu",
        config: SamClipConfig | None = None,
        *,
        sam_model: Any = None,
        clip_model: Any = None,
        clip_tokenizer: Any = None,
        captioner: Captioner | None | str = "config",
    ):
        self.config = cfg = config or SamClipConfig()
        if sam_model is None or clip_model is None or clip_tokenizer is None:
            from transformers import CLIPModel, CLIPTokenizer, SamModel

            from sas3d.utils.hub import pretrained_options

            try:
                sam_model = sam_model or SamModel.from_pretrained(cfg.sam_model_id, **pretrained_options(cfg.sam_model_id, "SAM model"))
                clip_opts = pretrained_options(cfg.clip_model_id, "CLIP model")
                clip_model = clip_model or CLIPModel.from_pretrained(cfg.clip_model_id, **clip_opts)
                clip_tokenizer = clip_tokenizer or CLIPTokenizer.from_pretrained(cfg.clip_model_id, **clip_opts)
            except OSError as exc:
                raise ConfigError(f"cannot load SAM/CLIP weights ({cfg.sam_model_id}, {cfg.clip_model_id}): {exc}") from exc
        from sas3d.text.clip import CLIPTextEncoder

        self.device = device
        self.sam = sam_model.to(device).eval()
        self.clip = clip_model.to(device).eval()
        self.text_encoder = text_encoder
        self.vocabulary = list(get_label_set(vocabulary).classes if isinstance(vocabulary, str) else vocabulary)
        self.captioner = build_captioner(cfg.captioner, device) if captioner == "config" else captioner
        # CLIP's own text tower labels the masks; the SHARED encoder (text_encoder) embeds the captions.
        self._class_text = CLIPTextEncoder(model=self.clip, tokenizer=clip_tokenizer, device=device).encode(
            [prompt_for(c) for c in self.vocabulary]
        )
        self.name = f"sam-clip-{cfg.sam_model_id}-{cfg.clip_model_id}"

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": to_dict(self.config),
            "vocabulary": self.vocabulary,
            "captioner": getattr(self.captioner, "name", None),
            "text_encoder": getattr(self.text_encoder, "name", type(self.text_encoder).__name__),
        }

    @property
    def identity(self) -> str:
        return f"sam-clip:{self.config.sam_model_id},{self.config.clip_model_id}"

    # ---- SAM --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_masks(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM automatic masks at output resolution: (n, h, w) bool masks and (n,) predicted IoUs."""
        cfg = self.config
        H, W = image.shape[:2]
        side = int(self.sam.config.vision_config.image_size)
        scale = side / max(H, W)
        rh, rw = max(1, round(H * scale)), max(1, round(W * scale))
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(SAM_MEAN).view(1, 3, 1, 1)) / torch.tensor(SAM_STD).view(1, 3, 1, 1)
        x = F.pad(x, (0, side - rw, 0, side - rh))  # SAM pads bottom/right after normalising
        dtype = next(self.sam.parameters()).dtype
        embeddings = self.sam.get_image_embeddings(x.to(self.device, dtype=dtype))

        out_scale = cfg.output_long_side / max(H, W)
        oh, ow = max(1, round(H * out_scale)), max(1, round(W * out_scale))
        n = cfg.points_per_side
        grid = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        gy, gx = torch.meshgrid(grid * rh, grid * rw, indexing="ij")
        points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (x, y) in SAM input pixels

        masks, scores = [], []
        for start in range(0, len(points), cfg.points_per_batch):
            pts = points[start : start + cfg.points_per_batch]
            out = self.sam(
                image_embeddings=embeddings,
                input_points=pts[None, :, None, :].to(self.device, dtype=dtype),
                input_labels=torch.ones(1, len(pts), 1, dtype=torch.long, device=self.device),
                multimask_output=True,
            )
            logits = out.pred_masks[0].flatten(0, 1).float()  # (P*3, m, m) over the padded input
            iou = out.iou_scores[0].flatten().float()
            keep = iou >= cfg.pred_iou_thresh
            if not bool(keep.any()):
                continue
            logits = F.interpolate(logits[keep][:, None], size=(side, side), mode="bilinear", align_corners=False)
            logits = F.interpolate(logits[:, :, :rh, :rw], size=(oh, ow), mode="bilinear", align_corners=False)[:, 0]
            hi = (logits > cfg.mask_threshold + cfg.stability_score_offset).flatten(1).sum(1)
            lo = (logits > cfg.mask_threshold - cfg.stability_score_offset).flatten(1).sum(1)
            stable = hi / lo.clamp(min=1) >= cfg.stability_score_thresh
            m = (logits > cfg.mask_threshold)[stable]
            area = m.flatten(1).sum(1)
            ok = area > max(0, cfg.min_mask_area)
            masks.append(m[ok].cpu())
            scores.append(iou[keep][stable][ok].cpu())
        if not masks or sum(len(m) for m in masks) == 0:
            return np.zeros((0, oh, ow), dtype=bool), np.zeros(0, dtype=np.float32)
        masks_t, scores_t = torch.cat(masks), torch.cat(scores)
        keep_idx = box_nms(_boxes(masks_t), scores_t, cfg.box_nms_thresh)
        return masks_t[keep_idx].numpy(), scores_t[keep_idx].numpy()

    # ---- CLIP labelling -----------------------------------------------------------------------
    @torch.no_grad()
    def label_masks(self, image: np.ndarray, masks: np.ndarray) -> list[str]:
        """Vocabulary class of each mask's crop by CLIP image-text cosine similarity (image resized to the masks)."""
        if len(masks) == 0:
            return []
        image = _resize(image, masks.shape[1:])
        side = int(self.clip.vision_model.config.image_size)
        crops = [_square_crop(image, m) for m in masks]
        feats = []
        dtype = next(self.clip.parameters()).dtype
        for start in range(0, len(crops), self.config.clip_batch_size):
            px = clip_preprocess(crops[start : start + self.config.clip_batch_size], (side, side))
            emb = self.clip.get_image_features(pixel_values=px.to(self.device, dtype=dtype)).pooler_output
            feats.append(F.normalize(emb.float(), dim=-1).cpu())
        best = (torch.cat(feats) @ self._class_text.T).argmax(1).tolist()
        return [self.vocabulary[i] for i in best]

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """(h, w, C) float32 map in the shared text space for one (H, W, 3) uint8 image."""
        masks, _ = self.generate_masks(image)
        labels = self.label_masks(image, masks)
        oh, ow = _out_shape(image.shape[:2], self.config.output_long_side)
        segment_ids = np.full((oh, ow), -1, dtype=np.int64)
        for i in np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable"):
            segment_ids[masks[i]] = i  # largest first, so smaller masks stay on top
        segments = {i: {"label": lab, "caption": None} for i, lab in enumerate(labels)}
        return masks_to_dense(segment_ids, segments, self.text_encoder, image=_resize(image, (oh, ow)), captioner=self.captioner)

    def predict(self, frame: Frame) -> np.ndarray:
        from sas3d.scene.images import read_color

        return self.predict_image(read_color(frame.color_path))


def _out_shape(shape: tuple[int, int], long_side: int) -> tuple[int, int]:
    s = long_side / max(shape)
    return max(1, round(shape[0] * s)), max(1, round(shape[1] * s))


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, h, w) bool -> (n, 4) [x0, y0, x1, y1] (exclusive max) boxes."""
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[1:]
    r = torch.arange(h)
    c = torch.arange(w)
    y0 = torch.where(rows, r, h).min(1).values
    y1 = torch.where(rows, r + 1, 0).max(1).values
    x0 = torch.where(cols, c, w).min(1).values
    x1 = torch.where(cols, c + 1, 0).max(1).values
    return torch.stack([x0, y0, x1, y1], 1).float()


def _resize(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if image.shape[:2] == tuple(shape):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def _square_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask's bbox crop, outside-mask pixels and square padding set to the mask's mean colour."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    inside = mask[r0:r1, c0:c1]
    crop = image[r0:r1, c0:c1].copy()
    fill = crop[inside].mean(0).astype(np.uint8)
    crop[~inside] = fill
    s = max(crop.shape[:2])
    out = np.empty((s, s, 3), dtype=np.uint8)
    out[:] = fill
    top, left = (s - crop.shape[0]) // 2, (s - crop.shape[1]) // 2
    out[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return out


def from_spec(argument: str, context: Any) -> Teacher:
    """Registry factory: ``sam-clip:[SAM_ID][,CLIP_ID[,CAPTIONER]]`` (CAPTIONER: offline | none | hf:<id>)."""
    parts = [p.strip() for p in argument.split(",")] if argument else []
    cfg = SamClipConfig()
    if len(parts) > 0 and parts[0]:
        cfg.sam_model_id = parts[0]
    if len(parts) > 1 and parts[1]:
        cfg.clip_model_id = parts[1]
    if len(parts) > 2 and parts[2]:
        cfg.captioner = parts[2]
    encoder = context.text_encoder
    if encoder is None:
        from sas3d.text.encoders import build_text_encoder

        encoder = build_text_encoder("minilm", getattr(context, "device", "cpu"))
    teacher = SamClipTeacher(encoder, context.label_set, device=context.device, config=cfg)
    return maybe_cached(teacher, context)
