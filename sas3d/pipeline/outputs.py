"""What a pipeline run shows besides its tables: the segmented scene and free-text queries, as PLY
files and rendered views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sas3d.pipeline.config import PipelineConfig
from sas3d.scene.types import Scene


def queries_and_renders(checkpoint: Path, scene: Scene, cfg: PipelineConfig, encoder: Any, class_text: torch.Tensor,
                         label_set: Any, out: Path, artefacts: dict[str, str]) -> list[dict[str, Any]]:
    """Per-point similarity for each free-text query (PLY + rendered PNGs) and the segmented scene."""
    from PIL import Image

    from sas3d.evaluate.predict import classify
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.models.inference import predict_point_features
    from sas3d.query.export import label_palette, similarity_colors, write_heatmap_ply, write_label_ply
    from sas3d.query.similarity import query_prompt, text_similarity

    model, _, _ = load_checkpoint(checkpoint)
    feats = predict_point_features(model, scene.points, cfg.voxel_size, colors=scene.colors)
    labels = classify(feats, class_text).numpy()
    render_dir = out / "renders"
    render_dir.mkdir(parents=True, exist_ok=True)
    write_label_ply(out / "segmentation.ply", scene, labels, list(label_set.classes))
    artefacts["segmentation_ply"] = "segmentation.ply"

    palette = label_palette(len(label_set))
    gt = np.where(scene.labels < len(label_set), scene.labels, 0) if scene.labels is not None else labels
    gt_colors = np.where((scene.labels < len(label_set))[:, None], palette[gt], 0) if scene.labels is not None else palette[labels]
    views = _render_views_of(scene, cfg.query_renders)
    for tag, colors in (("rgb", scene.colors), ("ground_truth", gt_colors), ("prediction", palette[labels])):
        if colors is None:
            continue
        paths = [_render(scene, colors, pose_k, render_dir / f"{tag}_{i}.png", Image) for i, pose_k in enumerate(views)]
        artefacts[f"render_{tag}"] = [str(p.relative_to(out)) for p in paths]  # type: ignore[assignment]

    results = []
    for q, text in enumerate(cfg.queries):
        prompt = query_prompt(text)
        sim = text_similarity(feats, encoder.encode([prompt])[0]).numpy()
        ply = out / "queries" / f"query_{q}.ply"
        write_heatmap_ply(ply, scene, sim)
        colors = similarity_colors(sim)
        paths = [_render(scene, colors, pose_k, render_dir / f"query_{q}_{i}.png", Image) for i, pose_k in enumerate(views)]
        top = np.argsort(-sim)[: max(1, len(sim) // 20)]  # the 5% most similar points
        hist = np.bincount(labels[top], minlength=len(label_set))
        gt_top = scene.labels[top] if scene.labels is not None else None
        gt_hist = np.bincount(gt_top[gt_top < len(label_set)], minlength=len(label_set)) if gt_top is not None else None
        results.append({
            "query": text, "prompt": prompt, "ply": str(ply.relative_to(out)),
            "renders": [str(p.relative_to(out)) for p in paths],
            "top5pct_ground_truth": {label_set.classes[i]: int(c) for i, c in enumerate(gt_hist) if c} if gt_hist is not None else None,
            "top5pct_predicted": {label_set.classes[i]: int(c) for i, c in enumerate(hist) if c},
        })
    return results


def _render_views_of(scene: Scene, count: int) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """Poses + intrinsics of evenly spread frames of the scene to render from."""
    frames = scene.frames
    if not frames or count < 1:
        return []
    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return [(frames[i].intrinsics, frames[i].pose, frames[i].width, frames[i].height) for i in picks]


def _render(scene: Scene, vertex_colors: np.ndarray, view: tuple, path: Path, image_module: Any) -> Path:
    """Render the mesh (or splat the points when there are no faces) with per-vertex colours."""
    from sas3d.geometry.raster import face_normals, headlight_shading, rasterize, shade

    intrinsics, pose, width, height = view
    colors = np.asarray(vertex_colors, dtype=np.uint8)
    if scene.faces is not None:
        _, face_id = rasterize(scene.points, scene.faces, intrinsics, pose, width, height)
        img = shade(face_id, scene.faces, colors).astype(np.float32)
        light = headlight_shading(face_id, face_normals(scene.points, scene.faces), intrinsics, pose)
        img = (img * light[..., None]).clip(0, 255).astype(np.uint8)
    else:
        img = _splat(scene.points, colors, intrinsics, pose, width, height)
    image_module.fromarray(img).save(path)
    return path


def _splat(points: np.ndarray, colors: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
    from sas3d.geometry.raster import world_to_camera

    cam = world_to_camera(points, pose)
    front = cam[:, 2] > 0.05
    uvw = cam[front] @ intrinsics.T
    u = np.round(uvw[:, 0] / uvw[:, 2]).astype(int)
    v = np.round(uvw[:, 1] / uvw[:, 2]).astype(int)
    ok = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    order = np.argsort(-cam[front][ok, 2])  # far first, near points overwrite
    img = np.zeros((height, width, 3), np.uint8)
    img[v[ok][order], u[ok][order]] = colors[front][ok][order]
    return img
