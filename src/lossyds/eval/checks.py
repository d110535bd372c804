"""What `lossyds eval` demands of a task model: a `--model module:function` that imports to a
function, and outputs its task can score.

A model that raises, or returns the wrong type, shape, class count or non-finite numbers,
stops the evaluation with a TaskModelError naming the model, the sample it failed on and what
was wrong; lossyds's own errors (a missing package, a stem the model lacks) pass unchanged.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import LossydsError, TaskModelError, UsageError


def load_callable(spec: str) -> Callable:
    """`module:function` -> the function. The current directory is searched too, as
    `python -m` would (the `lossyds` console script does not put it on sys.path)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"--model {spec!r} is not a module:function (e.g. mymodels:classify).")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--model {spec!r} is not an importable module:function ({exc}).") from exc
    except Exception as exc:  # a relative name, or the module's own code failing as it loads
        raise UsageError(f"--model {spec!r}: importing {module_name!r} failed ({failure(exc)}).") from exc
    if not hasattr(module, attribute):
        raise UsageError(f"--model {spec!r} is not an importable module:function ({module_name} has no {attribute!r}).")
    function = getattr(module, attribute)
    if not callable(function):
        raise UsageError(f"--model {spec!r} names {shown(function)}, not a function.")
    return function


def failure(exc: BaseException) -> str:
    """An exception in a few words: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
    return text.rstrip(".")


def shown(value: Any) -> str:
    """A model's output in a few words: None, or its type (with a short repr for plain values)."""
    if value is None:
        return "None"
    name = type(value).__name__
    article = "an" if name[0].lower() in "aeiou" else "a"
    if isinstance(value, (str, int, float)):
        return f"{article} {name} ({value!r:.60})"
    return f"{article} {name}"


def where(keys: Sequence[str]) -> str:
    return f"sample {keys[0]!r}" if len(keys) == 1 else f"samples {keys[0]!r} .. {keys[-1]!r} (one batch)"


def call(model: str, keys: Sequence[str], function: Callable, *args: Any) -> Any:
    """`function(*args)` for the samples `keys`; what it raises becomes a TaskModelError."""
    try:
        return function(*args)
    except LossydsError:
        raise
    except Exception as exc:  # the model's own code: reported, with the sample, in one sentence
        raise TaskModelError(f"model {model} failed on {where(keys)}: {failure(exc)}.") from exc


def _tensor(model: str, keys: Sequence[str], output: Any, wanted: str) -> torch.Tensor:
    if isinstance(output, np.ndarray) and np.issubdtype(output.dtype, np.number):
        output = torch.from_numpy(np.ascontiguousarray(output))
    if not isinstance(output, torch.Tensor) or output.dtype == torch.bool or output.is_complex():
        kind = f"a {output.dtype} tensor" if isinstance(output, torch.Tensor) else shown(output)
        raise TaskModelError(f"model {model} returned {kind} for {where(keys)}, not a tensor of {wanted}.")
    return output


def _no_nan(model: str, keys: Sequence[str], values: torch.Tensor, what: str) -> None:
    """NaN carries no ranking: a top-1 or a mask from it would be an artefact of argmax."""
    bad = torch.isnan(values.detach()).reshape(len(keys), -1).any(dim=1) if values.is_floating_point() else None
    if bad is not None and bool(bad.any()):
        key = keys[int(bad.nonzero()[0])]
        raise TaskModelError(f"model {model} returned NaN {what} for sample {key!r}.")


def logits_of(model: str, keys: Sequence[str], output: Any) -> torch.Tensor:
    """Classification: logits [N, classes] for the N samples `keys`."""
    logits = _tensor(model, keys, output, f"logits [{len(keys)}, classes]")
    if logits.dim() != 2 or logits.shape[0] != len(keys) or logits.shape[1] < 1:
        raise TaskModelError(
            f"model {model} returned logits of shape {list(logits.shape)} for {where(keys)}; "
            f"classification takes [{len(keys)}, classes]."
        )
    _no_nan(model, keys, logits, "logits")
    return logits


def masks_of(
    model: str, keys: Sequence[str], outputs: Sequence[Any], sizes: Sequence[tuple[int, int]], classes: int
) -> list[torch.Tensor]:
    """Segmentation: each output logits [1, classes, H, W] at its mask's size -> [classes, H, W]."""
    checked = []
    for key, output, size in zip(keys, outputs, sizes):
        logits = _tensor(model, [key], output, f"logits [1, {classes}, {size[0]}, {size[1]}]")
        if list(logits.shape) != [1, classes, *size]:
            raise TaskModelError(
                f"model {model} returned logits of shape {list(logits.shape)} for sample {key!r}; this build's "
                f"segmentation takes [1, {classes}, {size[0]}, {size[1]}] ({classes} classes at the mask's size)."
            )
        _no_nan(model, [key], logits, "logits")
        checked.append(logits[0])
    return checked


def texts_of(model: str, keys: Sequence[str], outputs: Any) -> list[str]:
    """ASR: one transcript (text) per sample."""
    if not isinstance(outputs, list) or len(outputs) != len(keys):
        raise TaskModelError(f"model {model} returned {shown(outputs)} for {where(keys)}, not one text per sample.")
    for key, text in zip(keys, outputs):
        if not isinstance(text, str):
            raise TaskModelError(f"model {model} returned {shown(text)} for sample {key!r}, not a transcript (str).")
    return outputs


def stems_of(model: str, key: str, output: Any, references: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Separation: {stem: finite numbers [C, T]} with every reference stem, each the reference's shape."""
    if not isinstance(output, Mapping):
        raise TaskModelError(
            f"model {model} returned {shown(output)} for sample {key!r}, not a mapping of stem name to audio."
        )
    estimates = {}
    for name, reference in references.items():
        value = output.get(name)
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if value.dtype == object or not np.issubdtype(value.dtype, np.number):
            raise TaskModelError(
                f"model {model} returned no audio for stem {name!r} of sample {key!r} "
                f"(got {shown(output.get(name))}); it must return {', '.join(references)}."
            )
        if value.shape != reference.shape:
            raise TaskModelError(
                f"model {model} returned stem {name!r} of shape {list(value.shape)} for sample {key!r}; "
                f"the reference is {list(reference.shape)}."
            )
        if not np.isfinite(value).all():
            kind = "NaN" if np.isnan(value).any() else "infinite values"
            raise TaskModelError(f"model {model} returned {kind} in stem {name!r} for sample {key!r}.")
        estimates[name] = value
    return estimates
