"""The README's demo tables are what the stored demo report renders to (no hand-copied figures)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_tables import BEGIN, END, STORED, render, replace_block  # noqa: E402


def test_stored_report_has_the_structure_a_demo_run_writes():
    report = json.loads(STORED.read_text())
    assert report["simulated"] is True and set(report["splits"]) == {"in_place", "held_out"}
    for name, split in report["splits"].items():
        stages = split["stages"]
        assert {"fusion:guided", "distill:pixel_point", "distill:superpoint", "distill:tesd", "distill:ensemble"} <= set(stages)
        assert ("distill:supervised" in stages) == (name == "held_out")
        for stage in stages.values():
            assert 0.0 <= stage["miou"] <= 1.0 and set(stage["per_class_iou"]) >= set(split["classes_present"])
    assert set(report["checks"]) == set(report["splits"]) and "wall_clock_s" in report


def test_readme_demo_tables_are_rendered_from_the_stored_report():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(BEGIN):readme.index(END) + len(END)]
    assert block == render(json.loads(STORED.read_text()))


def test_replace_block_rewrites_only_the_block():
    text = f"intro\n{BEGIN}\nold\n{END}\nrest\n"
    assert replace_block(text, f"{BEGIN}\nnew\n{END}") == f"intro\n{BEGIN}\nnew\n{END}\nrest\n"
