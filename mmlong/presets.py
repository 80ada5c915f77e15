"""Recipes as data: YAML presets in the top-level folders (ingest/, render/, train/, eval/),
loaded by name (`pdf-144dpi`) or by path (`my/preset.yaml`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RECIPES_ENV = "MMLONG_RECIPES"


def recipes_root() -> Path:
    """The folder holding ingest/, render/, train/ and eval/: $MMLONG_RECIPES, else the
    repository (or editable install) that holds this package."""
    env = os.environ.get(RECIPES_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent


def list_presets(group: str) -> list[str]:
    folder = recipes_root() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_preset(group: str, name: str) -> dict[str, Any]:
    """The preset `name` of `group` as a dict; `name` may also be a path to a YAML file."""
    import yaml

    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = recipes_root() / group / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets(group)) or "none found"
        raise ValueError(f"unknown {group} preset {name!r} (known: {known}; or pass a .yaml path)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a YAML mapping, got {type(data).__name__}")
    return data


def build(cls: type[T], data: dict[str, Any], what: str) -> T:
    """A settings dataclass from a preset section; unknown keys are an error that lists the
    known ones (a preset's `description` is ignored)."""
    names = set(cls.__dataclass_fields__)
    unknown = set(data) - names - {"description"}
    if unknown:
        raise ValueError(f"unknown {what} option(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: v for k, v in data.items() if k in names})
