"""Human-facing output of a pipeline run: the ablation table (terminal), report.json and report.html."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from sas3d.demo.pipeline import PipelineReport
from sas3d.utils.atomic import write_json_atomic, write_text_atomic

SIMULATED_BANNER = "SIMULATED teachers (derived from ground-truth renders with seeded error profiles): these are NOT real-model results"


def format_table(report: PipelineReport, title: str) -> str:
    """SAS Table-3-style ablation table, with the paper's ScanNet numbers alongside for orientation."""
    lines = [title]
    if report.simulated:
        lines.append(SIMULATED_BANNER)
    w = max(len(r.label) for r in report.rows) + 2
    lines.append(f"{'stage':<{w}}{'mIoU %':>8}{'mAcc %':>8}{'time s':>9}")
    lines.append("-" * (w + 25))
    for r in report.rows:
        lines.append(f"{r.label:<{w}}{_pct(r.miou):>8}{_pct(r.macc):>8}{r.seconds:>9.1f}")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def sas_ordering(report: PipelineReport) -> dict[str, bool]:
    """The orderings SAS claims (Table 3), checked on this run."""
    teachers = [r for r in report.rows if r.key.startswith("teacher:")]
    checks = {}
    guided = report.row("fusion:guided").miou
    checks["guided fusion > best single teacher"] = guided > max(r.miou for r in teachers)
    checks["guided fusion > add and linear"] = guided > max(report.row("fusion:add").miou, report.row("fusion:linear").miou)
    keys = [r.key for r in report.rows]
    if "distill:tesd" in keys:
        checks["3D SP+TESD > guided 2D"] = report.row("distill:tesd").miou > guided
    if "distill:superpoint" in keys and "distill:pixel_point" in keys:
        checks["3D + superpoint > pixel-point"] = report.row("distill:superpoint").miou > report.row("distill:pixel_point").miou
        checks["3D + TESD > + superpoint"] = report.row("distill:tesd").miou > report.row("distill:superpoint").miou
    return checks


def format_ratios(report: PipelineReport, comparisons: list[tuple[str, str, str]]) -> str:
    """One line per (name, row, row to beat): the mIoU ratio measured in this run, [ok] when > 1."""
    miou = {r.key: r.miou for r in report.rows}
    lines = ["SAS orderings (mIoU ratio against the row to beat, same run; > 1.00x = holds):"]
    for name, num, den in comparisons:
        if num in miou and den in miou and miou[den] > 0:
            ratio = miou[num] / miou[den]
            lines.append(f"  [{'ok' if ratio > 1 else 'NO'}] {name}: {ratio:.2f}x")
    return "\n".join(lines)


def write_report(report: PipelineReport, out_dir: str | Path, title: str, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write report.json, per-class IoU bar charts and report.html into ``out_dir``."""
    from sas3d.evaluate.plots import plot_per_class

    out = Path(out_dir)
    data = report.to_json()
    data["title"] = title
    data["sas_ordering"] = sas_ordering(report)
    data.update(extra or {})
    bars = []
    for key in ("fusion:guided", "distill:tesd"):
        if key in [r.key for r in report.rows]:
            r = report.row(key)
            name = f"iou_{key.replace(':', '_')}.png"
            iou = np.nan_to_num(np.array(r.per_class_iou, dtype=float))
            plot_per_class(out / name, report.classes, iou, iou, np.array(report.present),
                           f"{r.label}: per-class IoU" + (" (simulated teachers)" if report.simulated else ""))
            bars.append(name)
    data["artefacts"]["per_class_iou_plots"] = bars
    json_path = out / "report.json"
    write_json_atomic(json_path, data)
    html_path = out / "report.html"
    write_text_atomic(html_path, _html(report, data, title, bars))
    return json_path, html_path


def _html(report: PipelineReport, data: dict[str, Any], title: str, bars: list[str]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r.label)}</td><td>{_pct(r.miou)}</td><td>{_pct(r.macc)}</td><td>{r.seconds:.1f}</td></tr>"
        for r in report.rows)
    checks = "".join(f"<li>{'&#10004;' if ok else '&#10008;'} {esc(k)}</li>" for k, ok in data["sas_ordering"].items())
    timings = "".join(f"<tr><td>{esc(k)}</td><td>{v:.1f}</td></tr>" for k, v in report.timings.items())
    art = data["artefacts"]

    def imgs(paths: Any, caption: str) -> str:
        if not paths:
            return ""
        paths = [paths] if isinstance(paths, str) else paths
        return f"<figure><div class='row'>{''.join(f'<img src={esc(p)!r}>' for p in paths)}</div><figcaption>{esc(caption)}</figcaption></figure>"

    queries = "".join(imgs(q["renders"], f"query: \"{q['query']}\" (prompt \"{q['prompt']}\"), red = most similar")
                      for q in report.queries)
    banner = f"<p class='sim'>{esc(SIMULATED_BANNER)}</p>" if report.simulated else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} .sim {{ background: #fff3cd; padding: 8px; border: 1px solid #e0c97a; }}
img {{ max-width: 100%; margin: 2px; }} .row {{ display: flex; flex-wrap: wrap; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>{esc(title)}</h1>{banner}
<h2>Ablation (SAS Table 3 layout), held-out scene(s)</h2>
<table><tr><th>stage</th><th>mIoU %</th><th>mAcc %</th><th>eval s</th></tr>{rows}</table>
<ul>{checks}</ul>
<h2>Model capability (IoU on generated images)</h2>{imgs(art.get('capability_heatmap'), 'teachers x classes')}
<h2>Per-class IoU</h2>{imgs(bars, 'guided 2D fusion and the distilled SAS student')}
<h2>Segmented scene</h2>
{imgs(art.get('render_rgb'), 'colour')}{imgs(art.get('render_ground_truth'), 'ground truth')}{imgs(art.get('render_prediction'), 'SAS student prediction (3D only, no images at inference)')}
<h2>Text queries</h2>{queries}
<h2>Wall-clock per stage (s)</h2><table>{timings}</table>
</body></html>
"""
