"""Installs for both worlds: one spconv build per install (extras), and a warning when two are present."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_each_extra_brings_exactly_one_spconv_and_the_base_install_none():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spconv = lambda reqs: [r for r in reqs if r.lower().startswith("spconv")]  # noqa: E731
    assert spconv(project["dependencies"]) == []
    extras = project["optional-dependencies"]
    assert [r.split(">")[0] for r in spconv(extras["cpu"])] == ["spconv"]
    assert len(spconv(extras["cu12"])) == 1 and spconv(extras["cu12"])[0].startswith("spconv-cu12")
    assert '".[dev,cpu]"' in (ROOT / "Makefile").read_text()  # make sets up this CPU machine


def test_two_spconv_builds_installed_side_by_side_are_reported(monkeypatch):
    from sas3d.models import spconv_compat

    monkeypatch.setattr(spconv_compat, "spconv_distributions", lambda: ["spconv", "spconv-cu121"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spconv_compat.import_spconv()
    assert any("several spconv builds" in str(w.message) and "spconv-cu121" in str(w.message) for w in caught)
    monkeypatch.setattr(spconv_compat, "spconv_distributions", lambda: ["spconv"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spconv_compat.import_spconv()
    assert not caught
