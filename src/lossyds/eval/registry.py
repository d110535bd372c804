"""The two registries of `lossyds eval`: task name -> declaration, `--model` -> kind of task model."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from ..errors import UsageError
from .base import Task, TaskModel

# task name -> module in this package. The only place task names live.
_TASKS: dict[str, str] = {
    "asr": "asr",
    "classification": "classification",
    "segmentation": "segmentation",
    "separation": "separation",
}
TASKS = tuple(_TASKS)

# --model prefix or name -> "module:MODEL" (modules relative to this package).
_TASK_MODELS: dict[str, str] = {
    "hf": "hf:MODEL",
    "torchvision": "torchvision_models:MODEL",
    "demucs": "demucs_models:MODEL",
    "pocketsphinx": "pocketsphinx_model:MODEL",
    "oracle-irm": "oracle:MODEL",
}
FALLBACK = "callable_model:MODEL"  # module:function
ENTRY_POINT_GROUP = "lossyds.task_models"
_registered: dict[str, str] = {}  # register(): absolute "module:MODEL" targets


def task(name: str) -> Task:
    """The declaration of task `name`; UsageError naming the tasks otherwise."""
    if name not in _TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}.")
    return importlib.import_module(f"{__package__}.{_TASKS[name]}").TASK


def tasks() -> list[Task]:
    return [task(name) for name in TASKS]


def register(name: str, target: str) -> None:
    """Add a kind of task model from outside this package: `target` is "package.module:MODEL"."""
    if name in _TASK_MODELS:
        raise UsageError(f"task model name {name!r} is taken by a built-in kind.")
    _registered[name] = target


def _plugins() -> dict[str, str]:
    found = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_registered}


def _load(target: str, package: str | None) -> TaskModel:
    module_name, attribute = target.split(":")
    module = importlib.import_module(f"{package}.{module_name}" if package else module_name)
    return getattr(module, attribute)


def _kind(name: str, target: str, package: str | None) -> TaskModel:
    kind = _load(target, package)
    if kind.name != name:  # keeps the registry and the declarations from drifting apart
        raise RuntimeError(f"task model registry maps {name!r} to a declaration named {kind.name!r}")
    return kind


def model_kinds() -> dict[str, TaskModel]:
    """Every kind of task model by name: built in, then entry points and register()."""
    kinds = {name: _kind(name, target, __package__) for name, target in _TASK_MODELS.items()}
    for name, target in _plugins().items():
        kinds.setdefault(name, _kind(name, target, None))
    return kinds


def model_kind(spec: str, task_name: str) -> tuple[TaskModel, str]:
    """(kind, its argument) for `--model spec` on `task_name`: a kind named `spec`, or one whose
    prefix is the part before the first colon, that serves the task; else module:function."""
    head, colon, rest = spec.partition(":")
    kinds = {name: kind for name, kind in _candidates(head).items() if task_name in kind.tasks}
    kind = kinds.get(head)
    if kind is not None and bool(colon) == kind.takes_argument:
        return kind, rest
    return _load(FALLBACK, __package__), spec


def _candidates(head: str) -> dict[str, TaskModel]:
    """The kind called `head`, loading only its module (plugins are read only when needed)."""
    if head in _TASK_MODELS:
        return {head: _kind(head, _TASK_MODELS[head], __package__)}
    plugins = _plugins()
    return {head: _kind(head, plugins[head], None)} if head in plugins else {}


def model_help(task_name: str) -> str:
    """The `--model` spellings `task_name` takes, in words, default first."""
    declared = task(task_name)
    kinds = [kind for kind in model_kinds().values() if task_name in kind.tasks and kind.name != "module"]
    shown = [kind.shown + (" (default)" if kind.name == declared.default_model else "") for kind in kinds]
    shown.sort(key=lambda text: not text.endswith("(default)"))
    return ", ".join(shown) + " or module:function" if shown else "module:function"


def models_help() -> str:
    """`lossyds eval --model`'s help: the spellings each task takes, then what each kind is."""
    per_task = "; ".join(f"{name}: {model_help(name)}" for name in TASKS)
    described = [*model_kinds().values(), _load(FALLBACK, __package__)]
    kinds = "; ".join(f"{kind.shown}: {kind.summary}" for kind in described if kind.summary)
    return (
        f"The task model. Per task: {per_task}. Kinds: {kinds}. Installed packages may add kinds "
        f"(entry-point group {ENTRY_POINT_GROUP})."
    )


def load_model(spec: str, task_name: str, device: Any, options: dict[str, Any] | None = None) -> Any:
    """What `task_name`'s run function calls for `--model spec`, loaded onto `device`. `options`:
    the eval options its kind takes (lossyds.eval.options), as keyword arguments of its `load`."""
    declared = task(task_name)
    kind, argument = model_kind(spec, task_name)
    loaded = kind.load(argument, task_name, device, declared.batch, **(options or {}))
    return declared.from_function(loaded, device) if callable(loaded) else loaded  # adapters are not callable
