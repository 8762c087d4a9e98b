"""The dense tasks' common part: models named `<head>_<variant>` over a Twins backbone, built by
the task's `HEADS` (`twins.tasks.head`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from twins.tasks.head import Head, create_head_model, named_model_from_weights
from twins.train.task import Task


class DenseTask(Task):
    heads: Mapping[str, Head] = {}

    def create_model(self, name: str, **kwargs: Any) -> nn.Module:
        return create_head_model(self.heads, name, **kwargs)

    def model_from_weights(
        self, weights: Any, arch: str | None = None, *, model_args: Any = None
    ) -> nn.Module:
        return named_model_from_weights(self.heads, weights, arch, model_args)
