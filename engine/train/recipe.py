"""Training recipes: a model's hyper-parameters as a TOML file in the repo (recipes/).

A recipe has a ``[train]`` table (any TrainConfig field: arch, epochs, lr, ...), an
optional ``[arch_config]`` table (architecture options, e.g. ``variant``) and an optional
``[augment]`` table (engine.train.loader.Augmentation). ``tilelabel train --recipe FILE``
starts from it; a flag given on the command line wins over the recipe. Unknown keys and
values of the wrong type are refused with the key's name, so a typo never trains with a
silent default.
"""
from __future__ import annotations

import tomllib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from engine.errors import TileLabelError
from engine.train.loader import Augmentation
from engine.train.trainer import TrainConfig

TABLES = ("description", "train", "arch_config", "augment")


def _field_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, list) and len(value) == len(default)
    return isinstance(value, type(default))


def _checked(table: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    defaults = _field_defaults(cls)
    unknown = sorted(set(table) - set(defaults))
    if unknown:
        raise TileLabelError(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are "
                             f"{', '.join(sorted(defaults))}")
    for key, value in table.items():
        if not _same_kind(value, defaults[key]):
            raise TileLabelError(f"{where}: '{key}' must be like {defaults[key]!r}, "
                                 f"got {value!r}")
    return dict(table)


def load_recipe(path: Path) -> dict[str, Any]:
    """TrainConfig keyword arguments from a recipe file (``augment`` as an Augmentation)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TileLabelError(f"recipe not found: {path} (the repo's recipes are in "
                             "recipes/)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TileLabelError(f"{path} is not a valid TOML recipe: {exc}") from exc
    extra = sorted(set(doc) - set(TABLES))
    if extra:
        raise TileLabelError(f"{path}: unknown table(s) {', '.join(extra)}; a recipe has "
                             "[train], [arch_config] and [augment]")
    train = doc.get("train", {})
    for nested in ("augment", "arch_config"):
        if nested in train:
            raise TileLabelError(f"{path}: write {nested} as its own [{nested}] table")
    config = _checked(train, TrainConfig, f"{path} [train]")
    config["arch_config"] = dict(doc.get("arch_config", {}))
    config["augment"] = Augmentation(**_checked(doc.get("augment", {}), Augmentation,
                                                f"{path} [augment]"))
    return config


def make_config(recipe: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a recipe with command-line values on top (arch_config merged)."""
    arch_config = {**recipe.get("arch_config", {}), **overrides.pop("arch_config", {})}
    return TrainConfig(**{**recipe, **overrides, "arch_config": arch_config})
