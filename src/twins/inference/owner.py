"""Which model wrote an `--out` file: `OUT.twins.json` beside it records the model (its arch
and the file's sha256), the options that shape its rows and its columns, so that a run of
another model or other options is refused rather than mixed in, unless it overwrites."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twins.atomic import write_text
from twins.errors import TwinsError
from twins.inference.rows import parts_folder

SIDECAR_SUFFIX = ".twins.json"


def sidecar(out: Path) -> Path:
    return out.with_name(out.name + SIDECAR_SUFFIX)


def claim(out: Path, model: dict[str, Any], columns: Sequence[str], overwrite: bool) -> None:
    """Make `out` this model's: refuse a file of another model (or of no model this toolkit
    recorded) unless `overwrite`, which removes it and its parts first."""
    record = {"model": model, "columns": list(columns)}
    side, exists = sidecar(out), out.exists() or parts_folder(out).exists()
    if overwrite:
        for path in (out, side):
            path.unlink(missing_ok=True)
        shutil.rmtree(parts_folder(out), ignore_errors=True)
    elif side.is_file():
        written = json.loads(side.read_text(encoding="utf-8"))
        if written != record:
            raise TwinsError(
                f"--out {out} holds the predictions of another model or other options "
                f"({_describe(written.get('model'))}, not {_describe(model)}): pass --overwrite "
                "to replace them, or choose another --out",
                argument="out",
            )
        return
    elif exists:
        raise TwinsError(
            f"--out {out} exists but twins predict did not record its model ({side} is "
            "missing): pass --overwrite to replace it, or choose another --out",
            argument="out",
        )
    write_text(side, json.dumps(record, indent=1) + "\n")


def _describe(model: Any) -> str:
    if not isinstance(model, dict):
        return "unknown"
    shown = {key: str(value)[:12] if key == "sha256" else value for key, value in model.items()}
    return ", ".join(f"{key} {value}" for key, value in shown.items())
