"""Declared options: what a codec or a source takes, declared once, in its own module.

Each codec and each source lists its options as `Option`s. `lossyds build` turns every
declared option into a flag (`--name-with-dashes`), `--spec` files take the same names as
keys, and the Python API takes them as keyword arguments. Errors name the Python
parameter; the CLI shows the flag instead (see `OptionError.cli_message`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import OptionError, flag_name


@dataclass(frozen=True)
class Option:
    """One option of a codec or a source.

    `kind` is the Python type of the value (int, float, bool or str); `span` an inclusive
    (low, high) range for numbers (high may be math.inf); `choices` the allowed values.
    `default` None means the owner decides (or the option is unset)."""

    name: str
    kind: type
    help: str
    default: Any = None
    span: tuple[float, float] | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def flag(self) -> str:
        """The CLI spelling: `entropy_lm` -> `--entropy-lm`."""
        return flag_name(self.name)

    def describe(self) -> str:
        """The accepted values in words, e.g. 'an integer in 1..100'."""
        if self.choices is not None:
            return "one of " + ", ".join(_number(c) for c in self.choices)
        noun = {int: "an integer", float: "a number", bool: "true or false", str: "text"}[self.kind]
        if self.span is not None and self.span[1] == math.inf:
            return f"{noun} >= {_number(self.span[0])}"
        if self.span is not None:
            return f"{noun} in {_number(self.span[0])}..{_number(self.span[1])}"
        return noun

    def check(self, owner: str, value: Any) -> Any:
        """`value` converted to `kind` and checked; OptionError naming `owner` and the option."""
        converted = _convert(self.kind, value)
        if converted is None:
            raise OptionError(f"{owner} {{0}} must be {self.describe()} (got {value!r}).", self.name)
        if self.choices is not None and converted not in self.choices:
            raise OptionError(f"{owner} {{0}} must be {self.describe()} (got {value!r}).", self.name)
        if self.span is not None and not self.span[0] <= converted <= self.span[1]:
            raise OptionError(f"{owner} {{0}} must be {self.describe()} (got {value!r}).", self.name)
        return converted


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(kind: type, value: Any) -> Any:
    """`value` as `kind` (strings from specs and --codec-opt are parsed), or None if it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        return None
    if isinstance(value, bool):
        return None
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                return None
        return None
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return None
        return None
    return value if isinstance(value, str) else None


def check_options(owner: str, declared: tuple[Option, ...], given: dict[str, Any]) -> dict[str, Any]:
    """The `given` options checked against `declared` (None values dropped): an unknown name
    is an OptionError that lists what `owner` takes."""
    table = {option.name: option for option in declared}
    checked: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in table:
            valid = sorted(table)
            listed = ", ".join(f"{{{index}}}" for index in range(1, len(valid) + 1)) or "none"
            raise OptionError(f"{owner} takes no option {{0}} (it takes: {listed}).", name, *valid)
        checked[name] = table[name].check(owner, value)
    return checked


def merged_options(classes: list[type]) -> dict[str, list[tuple[type, Option]]]:
    """Option name -> [(declaring class, option), ...] over `classes` (for deriving CLI flags)."""
    merged: dict[str, list[tuple[type, Option]]] = {}
    for cls in classes:
        for option in cls.declared_options():
            merged.setdefault(option.name, []).append((cls, option))
    return merged
