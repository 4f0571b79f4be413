"""Training recipes for tests: a config dict written as a recipe YAML (first line its launch command)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_recipe(folder: Path, cfg: dict) -> Path:
    """`cfg` as `folder/recipe.yaml`, the form `videoqa train` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text("# videoqa train recipe.yaml\n" + yaml.safe_dump(cfg))
    return path
