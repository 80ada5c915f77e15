"""Recipes as data: YAML presets shipped inside the package (mmlong/recipes/<group>/, also
reachable from the repository's top-level ingest/, render/, train/ and eval/ folders), loaded by
name (`pdf-144dpi`) or by path (`my/preset.yaml`). $MMLONG_RECIPES points at another folder of
groups instead."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RECIPES_ENV = "MMLONG_RECIPES"
GROUPS = ("ingest", "render", "train", "eval")


def recipes_root() -> Path:
    """The folder holding the groups ingest/, render/, train/ and eval/: $MMLONG_RECIPES, else
    the recipes installed with the package."""
    env = os.environ.get(RECIPES_ENV)
    return Path(env) if env else Path(str(resources.files("mmlong") / "recipes"))


def list_presets(group: str) -> list[str]:
    folder = recipes_root() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def preset_path(group: str, name: str) -> Path:
    """The YAML file of preset `name` of `group` (or `name` itself when it is a .yaml path)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = recipes_root() / group / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets(group)) or "none found"
        raise ValueError(f"unknown {group} preset {name!r} (known: {known}; or pass a .yaml path)")
    return path


def load_preset(group: str, name: str) -> dict[str, Any]:
    """The preset `name` of `group` as a dict; `name` may also be a path to a YAML file."""
    import yaml

    path = preset_path(group, name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a YAML mapping, got {type(data).__name__}")
    return data


def build(cls: type[T], data: dict[str, Any], what: str) -> T:
    """A settings dataclass from a preset section; unknown keys are an error that lists the
    known ones (a preset's `description` is ignored)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a mapping of options, got {type(data).__name__}")
    names = set(cls.__dataclass_fields__)
    unknown = set(data) - names - {"description"}
    if unknown:
        raise ValueError(f"unknown {what} option(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: v for k, v in data.items() if k in names})
