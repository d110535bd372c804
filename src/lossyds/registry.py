"""The lookup shared by the codec and source registries: built-in names, then entry points."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import UsageError


def load_class(
    name: str, builtin: dict[str, str], package: str, plugins: dict[str, str], kind: str, choices: list[str]
) -> Any:
    """The class registered as `name`: built in ("module:Class" relative to `package`) or from
    a plugin ("package.module:Class"); UsageError naming the valid choices otherwise."""
    if name in builtin:
        module_name, class_name = builtin[name].split(":")
        module = importlib.import_module(f"{package}.{module_name}")
    elif name in plugins:
        module_name, class_name = plugins[name].split(":")
        module = importlib.import_module(module_name)
    else:
        raise UsageError(f"Unknown {kind} {name!r}; choose one of: {', '.join(choices)}.")
    cls = getattr(module, class_name)
    if cls.name != name:  # keeps the registry and the classes from drifting apart
        raise RuntimeError(f"registry maps {name!r} to {cls.__name__} whose name is {cls.name!r}")
    return cls
