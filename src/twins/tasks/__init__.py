"""The tasks the fit loop trains: classify, segment, detect (`twins.tasks.base.Task`).

A config names its task (`task`, else the task of its `arch`); each task's module is imported
when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from twins.tasks.base import Task

TASKS = {
    "classify": "twins.tasks.classify:ClassifyTask",
    "segment": "twins.tasks.segment:SegmentTask",
    "detect": "twins.tasks.detect:DetectTask",
}


def task_named(name: str) -> Task:
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_for(config: Any) -> Task:
    """The task of a training config."""
    return task_named(getattr(config, "task", "classify"))


__all__ = ["TASKS", "Task", "task_for", "task_named"]
