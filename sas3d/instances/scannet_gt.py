"""ScanNet instance ground truth: read (and, for generated scenes, write) the raw ScanNet annotation.

A raw ScanNet scan annotates instances over an over-segmentation of its mesh:

* ``<id>_vh_clean_2.0.010000.segs.json``: ``segIndices``, one segment id per vertex of
  ``<id>_vh_clean_2.ply``;
* ``<id>.aggregation.json``: ``segGroups``, each ``{"objectId", "label", "segments": [...]}``; an
  instance is the union of its segments' vertices, and ``label`` is a raw category mapped to an
  NYU40 id through ``scannetv2-labels.combined.tsv`` (columns ``raw_category`` -> ``nyu40id``).

We encode the result as the ScanNet benchmark does (``export_train_mesh_for_evaluation.py``): per
vertex ``nyu40_id * 1000 + objectId + 1``, 0 where no group covers the vertex; a later group
overwrites an earlier one on shared vertices, as there. The benchmark's own ground-truth files
(one such id per line) are read and written too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.utils.atomic import read_json_object

# NYU40 class names by id (the NYU Depth v2 40-class set ScanNet maps its raw categories to).
NYU40_NAMES = dict(enumerate((
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
), start=1))
# Fallback names when no label map is given: the NYU40 names, plus ScanNet20 spellings of the same ids.
_FALLBACK = {n: i for i, n in NYU40_NAMES.items()} | {"refrigerator": 24, "nightstand": 32}
LABEL_MAP_NAME = "scannetv2-labels.combined.tsv"
INSTANCE_DIVISOR = 1000  # benchmark encoding: label_id * 1000 + instance id


@dataclass
class InstanceGroundTruth:
    """Per-vertex ScanNet benchmark ids ``nyu40_id * 1000 + instance`` (instance 1-based), 0 = unannotated."""

    ids: np.ndarray
    source: Path | None = None

    @property
    def num_points(self) -> int:
        return int(self.ids.shape[0])

    @property
    def label_ids(self) -> np.ndarray:
        """(N,) NYU40 id per vertex (0 = unannotated)."""
        return self.ids // INSTANCE_DIVISOR


def read_label_map(path: str | Path) -> dict[str, int]:
    """``scannetv2-labels.combined.tsv`` -> {raw_category: nyu40id}."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise InputError(path, f"cannot read the label map ({exc})") from None
    if not rows or "raw_category" not in rows[0] or "nyu40id" not in rows[0]:
        raise InputError(path, "not a ScanNet label map: expected tab-separated columns 'raw_category' and 'nyu40id'")
    out = {}
    for r in rows:
        try:
            out[r["raw_category"]] = int(r["nyu40id"])
        except (TypeError, ValueError):
            raise InputError(path, f"non-integer nyu40id {r.get('nyu40id')!r} for {r.get('raw_category')!r}") from None
    return out


def _find_label_map(folder: Path) -> Path | None:
    for d in (folder, folder.parent, folder.parent.parent):
        if (d / LABEL_MAP_NAME).is_file():
            return d / LABEL_MAP_NAME
    return None


def annotation_files(scene_dir: str | Path) -> tuple[Path, Path]:
    """(segs.json, aggregation.json) of a ScanNet scan folder; InputError naming what is missing."""
    folder = Path(scene_dir)
    name = folder.name
    segs = folder / f"{name}_vh_clean_2.0.010000.segs.json"
    agg = folder / f"{name}.aggregation.json"
    if not segs.is_file():
        found = sorted(folder.glob("*_vh_clean_2.0.010000.segs.json"))
        segs = found[0] if len(found) == 1 else segs
    if not agg.is_file():
        found = [p for p in sorted(folder.glob("*.aggregation.json")) if "_vh_clean" not in p.name]
        agg = found[0] if len(found) == 1 else agg
    for p, what in ((segs, "segs.json over-segmentation"), (agg, "aggregation.json instance annotation")):
        if not p.is_file():
            raise InputError(p, f"no ScanNet {what}: instance ground truth needs <id>_vh_clean_2.0.010000.segs.json and <id>.aggregation.json")
    return segs, agg


def read_scannet_instance_gt(source: str | Path, num_points: int | None = None, label_map: str | Path | dict | None = None) -> InstanceGroundTruth:
    """Instance ground truth of a scan: a ScanNet scan folder (segs.json + aggregation.json) or a
    benchmark ground-truth ``.txt`` (one id per vertex).

    ``label_map``: a ``scannetv2-labels.combined.tsv`` path or dict; by default the file is looked for
    in the scan folder and the two above it, else raw labels must be NYU40 class names (as in the
    generated rooms), and any other label is an error asking for the map.
    """
    source = Path(source)
    if source.is_file() and source.suffix == ".txt":
        gt = read_benchmark_gt(source)
    else:
        gt = _read_aggregation(source, label_map)
    if num_points is not None and gt.num_points != int(num_points):
        raise InputError(gt.source, f"instance annotation covers {gt.num_points} vertices but the scene has {num_points} points")
    return gt


def _read_aggregation(folder: Path, label_map: str | Path | dict | None) -> InstanceGroundTruth:
    segs_path, agg_path = annotation_files(folder)
    segs = read_json_object(segs_path, "segment file").get("segIndices")
    if not isinstance(segs, list) or not segs:
        raise InputError(segs_path, "has no 'segIndices' list (one segment id per mesh vertex)")
    try:
        seg_ids = np.asarray(segs, dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError(segs_path, "'segIndices' must hold integers") from None
    groups = read_json_object(agg_path, "aggregation file").get("segGroups")
    if not isinstance(groups, list):
        raise InputError(agg_path, "has no 'segGroups' list")
    map_path = None
    if isinstance(label_map, dict):
        mapping = label_map
    else:
        map_path = Path(label_map) if label_map is not None else _find_label_map(folder)
        mapping = read_label_map(map_path) if map_path is not None else _FALLBACK
    unknown = sorted({str(g.get("label")) for g in groups if isinstance(g, dict) and g.get("label") not in mapping})
    if unknown and map_path is None and not isinstance(label_map, dict):
        raise InputError(agg_path, f"raw labels {unknown[:8]} are not NYU40 class names; pass ScanNet's {LABEL_MAP_NAME} "
                                   "(--label-map) to map raw categories to NYU40 ids")
    order = np.argsort(seg_ids, kind="stable")
    sorted_ids = seg_ids[order]
    ids = np.zeros(len(seg_ids), dtype=np.int64)
    for k, g in enumerate(groups):
        try:
            object_id = int(g["objectId"])
            segments = np.asarray(g["segments"], dtype=np.int64).reshape(-1)
            label = g["label"]
        except (KeyError, TypeError, ValueError):
            raise InputError(agg_path, f"segGroups[{k}] needs an integer 'objectId', a 'label' and a list of integer 'segments'") from None
        lo = np.searchsorted(sorted_ids, segments, side="left")
        hi = np.searchsorted(sorted_ids, segments, side="right")
        verts = order[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])] if len(segments) else np.zeros(0, np.int64)
        ids[verts] = int(mapping.get(label, 0)) * INSTANCE_DIVISOR + object_id + 1
    return InstanceGroundTruth(ids, agg_path)


def read_benchmark_gt(path: str | Path) -> InstanceGroundTruth:
    """A ScanNet benchmark ground-truth file: one ``label_id * 1000 + instance`` integer per vertex."""
    path = Path(path)
    try:
        ids = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a ScanNet instance ground-truth file: expected one integer per line ({exc})") from None
    if ids.ndim != 1:
        raise InputError(path, f"expected one integer per line, got {ids.shape[1]} columns")
    return InstanceGroundTruth(ids, path)


def write_benchmark_gt(path: str | Path, gt: InstanceGroundTruth) -> None:
    """Write ``gt`` as a ScanNet benchmark ground-truth ``.txt`` (atomic)."""
    from sas3d.utils.atomic import write_text_atomic

    write_text_atomic(path, "\n".join(str(int(i)) for i in gt.ids) + "\n")


def write_scannet_annotation(folder: str | Path, scene_id: str, instances: np.ndarray, nyu40_ids: np.ndarray) -> tuple[Path, Path]:
    """Write ``<id>_vh_clean_2.0.010000.segs.json`` + ``<id>.aggregation.json`` for per-vertex ``instances``
    (0 = none, else 1..I) whose vertices carry NYU40 ids ``nyu40_ids``; segments are the instances
    themselves and labels the NYU40 names. Used for generated scenes, so they read like ScanNet scans."""
    from sas3d.utils.atomic import write_json_atomic

    folder = Path(folder)
    inst = np.asarray(instances, dtype=np.int64).reshape(-1)
    nyu = np.asarray(nyu40_ids, dtype=np.int64).reshape(-1)
    groups = []
    for i in np.unique(inst[inst > 0]):
        labels = np.unique(nyu[inst == i])
        if len(labels) != 1 or int(labels[0]) not in NYU40_NAMES:
            raise ValueError(f"instance {i} has NYU40 labels {labels.tolist()}; an instance needs exactly one valid label")
        groups.append({"id": int(i) - 1, "objectId": int(i) - 1, "segments": [int(i)], "label": NYU40_NAMES[int(labels[0])]})
    segs = folder / f"{scene_id}_vh_clean_2.0.010000.segs.json"
    agg = folder / f"{scene_id}.aggregation.json"
    write_json_atomic(segs, {"sceneId": scene_id, "segIndices": inst.tolist(), "note": "segments = instances (sas3d generated scene)"})
    write_json_atomic(agg, {"sceneId": f"scannet.{scene_id}", "appId": "sas3d", "segGroups": groups, "segmentsFile": segs.name})
    return segs, agg
