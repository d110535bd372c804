"""`lossyds eval`: tasks and task models, each declared once, looked up through two registries.

A task is one module in this package whose `TASK` (`base.Task`) declares its name, modality,
default model, scores (with their direction and unit), per-sample outcome and run function,
plus one line in `_TASKS`. A kind of task model is one module whose `MODEL` (`base.TaskModel`)
declares the `--model` prefix it answers to (`hf:`, `torchvision:`, `demucs:`) or its whole
name (`pocketsphinx`, `oracle-irm`), the tasks it serves and how it loads, plus one line in
`_TASK_MODELS`; from another package, an entry point in the group `lossyds.task_models`
(`NAME = "module:MODEL"`), or in-process `register(NAME, "module:MODEL")`. A `--model` that
names no kind serving the task is read as `module:function`. Modules load lazily.
"""

from __future__ import annotations

from typing import Any

from .base import Outcome, Score, Task, TaskModel
from .registry import (
    ENTRY_POINT_GROUP,
    TASKS,
    load_model,
    model_help,
    model_kind,
    model_kinds,
    models_help,
    register,
    task,
    tasks,
)


def __getattr__(name: str) -> Any:
    # `evaluate` loads the data pipeline; listing tasks for the CLI should not.
    if name == "evaluate":
        from .runner import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENTRY_POINT_GROUP",
    "TASKS",
    "Outcome",
    "Score",
    "Task",
    "TaskModel",
    "evaluate",
    "load_model",
    "model_help",
    "models_help",
    "model_kind",
    "model_kinds",
    "register",
    "task",
    "tasks",
]
