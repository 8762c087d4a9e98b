"""What every runtime's model is (`Artifact`), and the metadata it must carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from twins.errors import TwinsError


class Artifact(Protocol):
    """An exported model, ready to run."""

    metadata: dict[str, Any]

    def __call__(self, images: Any) -> Any: ...


def described_metadata(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata`, refused in one line where it does not say which model it holds: its
    preprocessing, classes and categories come from there."""
    if not metadata.get("arch"):
        raise TwinsError(
            f"{path} carries no twins metadata (arch, classes, preprocessing): export it again "
            "with twins export, or predict with the weights it was exported from",
            argument="checkpoint",
        )
    return metadata
