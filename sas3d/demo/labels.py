"""Class indices the room generator labels with (ScanNet20) and the room constants it shares."""

from __future__ import annotations

from sas3d.scene.types import IGNORE_LABEL
from sas3d.text.labelsets import get_label_set

_CLASSES = get_label_set("scannet20")
L = {name: i for i, name in enumerate(_CLASSES.classes)}  # class name -> ScanNet20 index
PROP = IGNORE_LABEL  # small objects outside ScanNet20 (monitors, lamps): "no ground truth", as in ScanNet
WALL_HEIGHT = 2.6
