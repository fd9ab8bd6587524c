"""Regenerate the README's demo tables from a demo run's report.json (so the README quotes a run).

    .venv/bin/python benchmarks/readme_tables.py runs/demo/report.json

copies the report to ``docs/demo_report.json`` (the stored report the README quotes) and rewrites the
block between ``<!-- demo-tables:begin -->`` and ``<!-- demo-tables:end -->`` in README.md with
:func:`sas3d.pipeline.report.markdown_tables` of it. ``tests/test_readme_tables.py`` checks in CI that
the README block is exactly what the stored report renders to, and that the stored report has the
structure a demo run writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BEGIN, END = "<!-- demo-tables:begin -->", "<!-- demo-tables:end -->"
STORED = REPO / "docs" / "demo_report.json"
# the per-class columns of the README tables: the small and wall-embedded classes the student used to erase
SMALL_CLASSES = ["door", "window", "picture", "chair", "table", "otherfurniture"]


def render(report: dict) -> str:
    from sas3d.pipeline.report import markdown_tables

    return f"{BEGIN}\n{markdown_tables(report, SMALL_CLASSES)}{END}"


def replace_block(readme: str, block: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="report.json of a `sas3d demo` run")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    STORED.write_text(json.dumps(report, indent=1) + "\n")
    args.readme.write_text(replace_block(args.readme.read_text(), render(report)))
    print(f"wrote {STORED} and the demo tables of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
