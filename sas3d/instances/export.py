"""Write labelled instances: a PLY with per-vertex instance id and colour, and a JSON list of instances.

PLY vertex properties: ``instance`` (int, -1 = no instance), ``label`` (ushort class index, 65535 =
none), colours by instance (grey for none). Where instances overlap, a vertex shows the
highest-scored one. Mesh faces are kept.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np

from sas3d.instances.types import Instances
from sas3d.scene.types import Scene
from sas3d.utils.atomic import write_json_atomic

NO_INSTANCE_COLOR = (110, 110, 110)
NO_LABEL = 65535


def instance_colors(num: int) -> np.ndarray:
    """(num, 3) uint8 distinct colours: golden-angle hues, alternating saturation/value."""
    out = np.zeros((num, 3), dtype=np.uint8)
    for i in range(num):
        h = (i * 0.618033988749895) % 1.0
        s, v = (0.75, 0.95) if i % 2 == 0 else (0.55, 0.8)
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


def colors_for_point_ids(point_ids: np.ndarray) -> np.ndarray:
    """(N, 3) uint8: instance colour per point (``point_ids`` from :meth:`Instances.point_ids`), grey for -1."""
    ids = np.asarray(point_ids, dtype=np.int64)
    pal = instance_colors(int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0)
    out = np.empty((len(ids), 3), dtype=np.uint8)
    out[:] = NO_INSTANCE_COLOR
    has = ids >= 0
    out[has] = pal[ids[has]]
    return out


def instance_records(scene: Scene, instances: Instances) -> list[dict[str, Any]]:
    """One JSON-ready dict per instance: id, class, score, point count, axis-aligned bounding box."""
    pts = np.asarray(scene.points, dtype=np.float64)
    agreement = instances.metadata.get("agreement")
    out = []
    for i in range(len(instances)):
        idx = instances.point_indices(i)
        p = pts[idx]
        rec = {"id": i, "class": instances.class_names[int(instances.classes[i])], "class_index": int(instances.classes[i]),
               "score": round(float(instances.scores[i]), 6), "points": int(len(idx)),
               "bbox_min": np.round(p.min(axis=0), 4).tolist(), "bbox_max": np.round(p.max(axis=0), 4).tolist(),
               "center": np.round(p.mean(axis=0), 4).tolist()}
        if agreement is not None:
            rec["agreement"] = round(float(agreement[i]), 4)
        out.append(rec)
    return out


def write_instances(out_dir: str | Path, scene: Scene, instances: Instances, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``instances.ply`` and ``instances.json`` under ``out_dir``; returns their paths."""
    from sas3d.scene.ply import write_ply

    out = Path(out_dir)
    point_ids = instances.point_ids()
    labels = np.where(point_ids >= 0, instances.classes[np.clip(point_ids, 0, None)] if len(instances) else 0, NO_LABEL)
    ply = out / "instances.ply"
    write_ply(ply, scene.points, colors=colors_for_point_ids(point_ids), faces=scene.faces,
              vertex_props={"instance": point_ids.astype(np.int32), "label": labels.astype(np.uint16)})
    palette = instance_colors(len(instances))
    records = instance_records(scene, instances)
    for r in records:
        r["color"] = palette[r["id"]].tolist()
    meta = {k: v for k, v in instances.metadata.items() if k not in ("agreement", "probability")}
    js = out / "instances.json"
    write_json_atomic(js, {"scene": scene.name, "ply": ply.name, "instance_property": "instance", "label_property": "label",
                           "classes": instances.class_names, "instances": records, **meta, **(extra or {})})
    return ply, js
