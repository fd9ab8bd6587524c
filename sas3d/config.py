"""Typed dataclass configs, YAML recipes over them, and ``--set a.b=value`` overrides.

Every stage keeps its own dataclass config in its own module (defaults = the paper / reference
code values, each with a one-line source comment). Recipes in ``sas3d/configs/*.yaml`` override
those defaults; the command line overrides the recipe. The resolved config is stored next to
every artefact (``to_dict``).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from sas3d.errors import ConfigError

T = TypeVar("T")
RECIPE_DIR = Path(__file__).parent / "configs"


def to_dict(cfg: Any) -> Any:
    """Dataclass (nested) -> plain dict of JSON/YAML-safe values."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a (partial) dict; unknown keys are an error, not ignored."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {where or cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        seq = [_coerce(inner, v, where) for v in value] if inner is not Ellipsis else list(value)
        return tuple(seq) if origin is tuple else seq
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is Path:
        return Path(value)
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"distill.epochs=10"`` -> (["distill", "epochs"], 10); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict:
    """Deep merge of two plain dicts (update wins)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def apply_overrides(data: Mapping[str, Any], overrides: list[str] | None) -> dict:
    out = dict(data)
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        out = merge(out, nested)
    return out


def load_yaml(path_or_name: str | Path) -> dict:
    """Load a recipe by name (``sas``, ``ggsd``, ``openscene``) or by path."""
    path = Path(path_or_name)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise ConfigError(f"{path}: recipe not found (built-in recipes: {known})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping at the top level")
    return data
