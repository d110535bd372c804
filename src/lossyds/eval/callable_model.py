"""`--model module:function`: the user's own function, for every task, with the contract its
task states (see each task module's `from_function`). Any `--model` that names no other kind
of task model is read as one."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import TaskModel
from .checks import load_callable


def load(argument: str, task: str, device: torch.device, batch: int) -> Callable:
    return load_callable(argument)


MODEL = TaskModel(
    name="module",
    tasks=("asr", "classification", "segmentation", "separation"),
    load=load,
    spelling="module:function",
    summary="a Python function with the task's contract (CONTRIBUTING.md), imported from the installed module",
)
