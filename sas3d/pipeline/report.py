"""Human-facing output of a pipeline run: the tables (terminal, README markdown), report.json, report.html.

Everything a table or a check states is computed from the run's numbers; nothing here is a fixed
conclusion. :func:`markdown_tables` renders the README's demo tables from a ``report.json``, so the
README quotes a stored report (``docs/demo_report.json``) rather than hand-copied figures.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from sas3d.capability.ranking import format_ranking
from sas3d.pipeline.config import SPLITS, PipelineReport
from sas3d.utils.atomic import write_json_atomic, write_text_atomic

SIMULATED_BANNER = "SIMULATED teachers (derived from ground-truth renders with seeded error profiles): these are NOT real-model results"
STUDENT_MARGIN = 0.05  # the student should beat guided 2D by 5 mIoU points (issue target, in-place)
KEEP_FRACTION = 0.8  # ... and keep >= 80 % of the guided IoU of every class guided gets >= 50 IoU on
KEPT_FROM = 0.5
STAGE_CHAIN = ("distill:pixel_point", "distill:superpoint", "distill:tesd")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def lost_classes(split: dict[str, Any], student: str = "distill:tesd", teacher: str = "fusion:guided") -> list[str]:
    """Classes the 2D teacher gets >= 50 IoU on whose student IoU is below 80 % of it."""
    stages = split["stages"]
    if student not in stages or teacher not in stages:
        return []
    return classes_lost(stages[student]["per_class_iou"], stages[teacher]["per_class_iou"])


def classes_lost(student_iou: dict[str, float | None], teacher_iou: dict[str, float | None]) -> list[str]:
    """The rule of :func:`lost_classes` on two per-class IoU dicts (fractions)."""
    return [c for c, v in teacher_iou.items() if v is not None and v >= KEPT_FROM and (student_iou.get(c) or 0.0) < KEEP_FRACTION * v]


def split_checks(split: dict[str, Any]) -> dict[str, bool]:
    """The orderings SAS claims (Table 3), checked on one split of this run."""
    stages = split["stages"]
    miou = {k: v["miou"] for k, v in stages.items()}
    teachers = [k for k in miou if k.startswith("teacher:")]
    checks = {}
    if "fusion:guided" in miou and teachers:
        checks["guided 2D >= best single teacher"] = miou["fusion:guided"] >= max(miou[t] for t in teachers)
        checks["guided 2D >= add and linear"] = miou["fusion:guided"] >= max(miou.get("fusion:add", 0), miou.get("fusion:linear", 0))
    chain = [k for k in STAGE_CHAIN if k in miou]
    for a, b in zip(chain, chain[1:]):
        checks[f"{stages[b]['label']} >= {stages[a]['label']}"] = miou[b] >= miou[a]
    if "distill:tesd" in miou and "fusion:guided" in miou:
        checks["SAS student >= guided 2D + 5 mIoU"] = miou["distill:tesd"] >= miou["fusion:guided"] + STUDENT_MARGIN
        checks["no class lost (>= 80 % of every guided IoU >= 50)"] = not lost_classes(split)
    return checks


def format_tables(data: dict[str, Any], title: str) -> str:
    """Terminal tables of every split of a report.json dict, with its checks and derived comparisons."""
    lines = [title]
    if data.get("simulated"):
        lines.append(SIMULATED_BANNER)
    for name, split in data["splits"].items():
        stages = split["stages"]
        w = max(len(v["label"]) for v in stages.values()) + 2
        lines += ["", f"{name.replace('_', ' ')}: {SPLITS[name]} ({', '.join(split['scenes'])})",
                  f"{'stage':<{w}}{'mIoU %':>8}{'mAcc %':>8}", "-" * (w + 16)]
        lines += [f"{v['label']:<{w}}{_pct(v['miou']):>8}{_pct(v['macc']):>8}" for v in stages.values()]
        for check, ok in split_checks(split).items():
            lines.append(f"  [{'ok' if ok else 'NO'}] {check}")
        lost = lost_classes(split)
        if "distill:tesd" in stages:
            lines.append(f"  SAS student vs guided 2D: {_pct(stages['distill:tesd']['miou'])} vs {_pct(stages['fusion:guided']['miou'])} "
                         f"({100 * (stages['distill:tesd']['miou'] - stages['fusion:guided']['miou']):+.1f}); lost classes: "
                         + (", ".join(lost) if lost else "none"))
        if "distill:supervised" in stages and "distill:tesd" in stages and stages["distill:supervised"]["miou"] > 0:
            ref = stages["distill:supervised"]["miou"]
            lines.append(f"  supervised reference (same student and budget, ground-truth labels): {_pct(ref)} mIoU; "
                         f"SAS student / reference = {stages['distill:tesd']['miou'] / ref:.2f}x")
    if data.get("capability_ranking"):
        lines += ["", *format_ranking(data["capability_ranking"], bool(data.get("simulated")))]
    return "\n".join(lines)


def markdown_tables(data: dict[str, Any], small_classes: list[str] | None = None) -> str:
    """The README's demo tables (one per split) from a report.json dict: mIoU, mAcc and the per-class
    IoU of ``small_classes`` (default: every class present in the split)."""
    out = []
    for name, split in data["splits"].items():
        stages = split["stages"]
        classes = small_classes or split["classes_present"]
        classes = [c for c in classes if c in split["classes_present"]]
        head = "| stage (SIMULATED teachers) | mIoU % | mAcc % | " + " | ".join(classes) + " |"
        out += [f"**{name.replace('_', ' ')}** ({SPLITS[name]}: {', '.join(split['scenes'])})", "", head,
                "|" + "---|" * (3 + len(classes))]
        for key, v in stages.items():
            label = f"**{v['label']}**" if key == "distill:tesd" else v["label"]
            cells = [_pct(v["per_class_iou"].get(c)) for c in classes]
            out.append(f"| {label} | {_pct(v['miou'])} | {_pct(v['macc'])} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def format_ratios(data: dict[str, Any], split: str, comparisons: list[tuple[str, str, str]]) -> str:
    """One line per (name, row, row to beat) of a split: the mIoU ratio measured in this run, [ok] when >= 1."""
    miou = {k: v["miou"] for k, v in data["splits"][split]["stages"].items()}
    lines = [f"SAS orderings, {split.replace('_', ' ')} (mIoU ratio against the row to beat, same run; >= 1.00x = holds):"]
    for name, num, den in comparisons:
        if num in miou and den in miou and miou[den] > 0:
            ratio = miou[num] / miou[den]
            lines.append(f"  [{'ok' if ratio >= 1 else 'NO'}] {name}: {ratio:.2f}x")
    return "\n".join(lines)


def write_report(report: PipelineReport, out_dir: str | Path, title: str, extra: dict[str, Any] | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Write report.json, per-class IoU bar charts and report.html into ``out_dir``; returns (json, html, data)."""
    from sas3d.evaluate.plots import plot_per_class

    out = Path(out_dir)
    data = report.to_json()
    data["title"] = title
    data["checks"] = {name: split_checks(split) for name, split in data["splits"].items()}
    data["lost_classes"] = {name: lost_classes(split) for name, split in data["splits"].items()}
    data.update(extra or {})
    bars = []
    for split in report.splits:
        for key in ("fusion:guided", "distill:tesd"):
            if split.has(key):
                r = split.row(key)
                name = f"iou_{split.name}_{key.replace(':', '_')}.png"
                iou = np.array(r.per_class_iou, dtype=float)
                present = ~np.isnan(iou)
                plot_per_class(out / name, report.classes, np.nan_to_num(iou), np.nan_to_num(iou), present,
                               f"{r.label} ({split.name.replace('_', ' ')}): per-class IoU" + (" (simulated teachers)" if report.simulated else ""))
                bars.append(name)
    data["artefacts"]["per_class_iou_plots"] = bars
    json_path = out / "report.json"
    write_json_atomic(json_path, data)
    html_path = out / "report.html"
    write_text_atomic(html_path, _html(data, title, bars))
    return json_path, html_path, data


def _html(data: dict[str, Any], title: str, bars: list[str]) -> str:
    esc = html.escape
    tables = []
    for name, split in data["splits"].items():
        rows = "".join(f"<tr><td>{esc(v['label'])}</td><td>{_pct(v['miou'])}</td><td>{_pct(v['macc'])}</td></tr>"
                       for v in split["stages"].values())
        checks = "".join(f"<li>{'&#10004;' if ok else '&#10008;'} {esc(k)}</li>" for k, ok in data["checks"][name].items())
        tables.append(f"<h2>{esc(name.replace('_', ' '))}: {esc(SPLITS[name])} ({esc(', '.join(split['scenes']))})</h2>"
                      f"<table><tr><th>stage</th><th>mIoU %</th><th>mAcc %</th></tr>{rows}</table><ul>{checks}</ul>")
    timings = "".join(f"<tr><td>{esc(k)}</td><td>{v:.1f}</td></tr>" for k, v in data["timings_s"].items())
    art = data["artefacts"]

    def imgs(paths: Any, caption: str) -> str:
        if not paths:
            return ""
        paths = [paths] if isinstance(paths, str) else paths
        return f"<figure><div class='row'>{''.join(f'<img src={esc(p)!r}>' for p in paths)}</div><figcaption>{esc(caption)}</figcaption></figure>"

    queries = "".join(imgs(q["renders"], f"query: \"{q['query']}\" (prompt \"{q['prompt']}\"), red = most similar")
                      for q in data["queries"])
    banner = f"<p class='sim'>{esc(SIMULATED_BANNER)}</p>" if data.get("simulated") else ""
    shown = esc(str(data["config"].get("shown_scene", "")))
    ranking = data.get("capability_ranking")
    ranking = f"<pre>{esc(chr(10).join(format_ranking(ranking, bool(data.get('simulated')))))}</pre>" if ranking else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} .sim {{ background: #fff3cd; padding: 8px; border: 1px solid #e0c97a; }}
img {{ max-width: 100%; margin: 2px; }} .row {{ display: flex; flex-wrap: wrap; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>{esc(title)}</h1>{banner}
{''.join(tables)}
<h2>Model capability (IoU on generated images)</h2>{imgs(art.get('capability_heatmap'), 'teachers x classes')}{ranking}
<h2>Per-class IoU</h2>{imgs(bars, 'guided 2D fusion and the distilled SAS student, per split')}
<h2>Segmented scene ({shown})</h2>
{imgs(art.get('render_rgb'), 'colour')}{imgs(art.get('render_ground_truth'), 'ground truth')}{imgs(art.get('render_prediction'), 'SAS student prediction (3D only, no images at inference)')}
<h2>Text queries</h2>{queries}
<h2>Wall-clock per stage (s)</h2><table>{timings}</table>
</body></html>
"""
