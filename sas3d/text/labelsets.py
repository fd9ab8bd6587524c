"""Label sets (class-name lists shipped as data files) and the mappings between them.

Class lists as in OpenScene's dataset/label_constants.py; nuScenes' 43 query names from SAS Table 8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.scene.types import IGNORE_LABEL

DATA_DIR = Path(__file__).parent / "labelsets"

# NYU40 ids that ScanNet20 keeps, in ScanNet20 order (the ScanNet benchmark's VALID_CLASS_IDS).
NYU40_TO_SCANNET20_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
# Names of the catch-all classes, encoded as the bare word "other" (OpenScene util/util.py extract_text_feature).
CATCH_ALL = {"otherfurniture", "other"}
PROMPT_TEMPLATE = "a {name} in a scene"  # OpenScene's prompt engineering, used by SAS (Sec. 4.1)


@dataclass(frozen=True)
class LabelSet:
    name: str
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise InputError(None, f"unknown class {name!r} for label set {self.name} (known: {', '.join(self.classes)})") from None

    @property
    def catch_all_index(self) -> int | None:
        for i, c in enumerate(self.classes):
            if c in CATCH_ALL:
                return i
        return None

    def prompts(self) -> list[str]:
        return [prompt_for(c) for c in self.classes]


def prompt_for(name: str) -> str:
    """The text actually encoded for a class name: the template, or bare "other" for the catch-all."""
    return "other" if name in CATCH_ALL else PROMPT_TEMPLATE.format(name=name)


def available() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.txt"))


@lru_cache(maxsize=None)
def get_label_set(name: str) -> LabelSet:
    """Load a label set by name (e.g. ``scannet20``, ``nuscenes16``, ``vocabulary_indoor``) or from a .txt path."""
    path = Path(name)
    if not path.is_file():
        path = DATA_DIR / f"{name}.txt"
    if not path.is_file():
        raise InputError(path, f"unknown label set {name!r}; available: {', '.join(available())}")
    classes = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return LabelSet(path.stem, classes)


def nyu40_to_scannet20(nyu_ids: np.ndarray) -> np.ndarray:
    """Map NYU40 ids to ScanNet20 indices; everything else (and 0 = unlabeled) -> IGNORE_LABEL."""
    lut = np.full(max(256, int(nyu_ids.max(initial=0)) + 1), IGNORE_LABEL, dtype=np.int64)
    lut[list(NYU40_TO_SCANNET20_IDS)] = np.arange(len(NYU40_TO_SCANNET20_IDS))
    return lut[np.asarray(nyu_ids, dtype=np.int64)]


@lru_cache(maxsize=None)
def nuscenes43_mapping() -> dict[str, str]:
    """The 43 unambiguous query names -> their nuScenes16 class (SAS Table 8)."""
    groups = json.loads((DATA_DIR / "nuscenes43.json").read_text())
    return {alias: cls for cls, aliases in groups.items() for alias in aliases}
