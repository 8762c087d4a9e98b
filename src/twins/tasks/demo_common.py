"""What the demos share: their recipe loaded for a data and output folder, the compute threads
they train with, and how they print a duration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twins.config import load_config
from twins.errors import TwinsError


def load_demo_recipe(
    recipe: Path, overrides: list[str] | tuple[str, ...], data: Path, output: Path
) -> Any:
    """A demo's recipe with its data in `data` and its run in `output`, `overrides` applied
    (`twins.train.load_config`); a recipe missing (a copy without the configs) is one line."""
    if not recipe.is_file():
        raise TwinsError(f"demo recipe {recipe} not found: run the demo from a clone of twins")
    return load_config(recipe, overrides, data_url=str(data), train_url=str(output))


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
