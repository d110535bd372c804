"""The options of `lossyds eval`, each declared once: an `Option` (so a CLI flag, a study-file
key and a keyword argument of `evaluate`) and the tasks and kinds of task model it applies to.

Every default is the standard behaviour; the other values reproduce what a published study did
and are named after what they do. The module imports no torch, so the CLI derives its flags
from it without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..options import Option, check_options


@dataclass(frozen=True)
class EvalOption:
    """One option of `lossyds eval`. `tasks`: the tasks it applies to; `models`: the kinds of
    task model (`hf`, ...) it applies to, empty for every kind. Where it takes effect:
    `runner` (the samples and their decoding) or `model` (passed to the kind's `load`)."""

    option: Option
    tasks: tuple[str, ...]
    models: tuple[str, ...] = ()
    where: str = "runner"


_IMAGE_TASKS = ("classification", "segmentation")
EVAL_OPTIONS: tuple[EvalOption, ...] = (
    EvalOption(
        Option(
            "exclude",
            str,
            "Keys of samples to leave out of the evaluation, comma-separated (a study file may give a list); "
            "each must be a key of the build.",
        ),
        ("asr", "classification", "segmentation", "separation"),
    ),
    EvalOption(
        Option(
            "padded_output",
            bool,
            "Learned image codecs: hand the task model the decoded image at the padded size the codec coded "
            "(a multiple of 64 px, e.g. 512x512 for a 500x500 source) instead of cropped to the source size.",
            default=False,
        ),
        _IMAGE_TASKS,
    ),
    EvalOption(
        Option(
            "native_size",
            bool,
            "hf: segmentation models: the image at its own size through the processor (no resize), the argmax "
            "at the model's output resolution (1/4 for SegFormer), then that integer label map resized "
            "bilinearly to the mask (torchvision Resize) instead of the logits.",
            default=False,
        ),
        ("segmentation",),
        ("hf",),
        "model",
    ),
    EvalOption(
        Option(
            "language",
            str,
            "hf: speech models: the language the decoder is told (a Whisper language code or name), or "
            "`detect` to let the model detect it in each window.",
            default="en",
        ),
        ("asr",),
        ("hf",),
        "model",
    ),
)


def eval_option(name: str) -> EvalOption:
    return next(entry for entry in EVAL_OPTIONS if entry.option.name == name)


def check_eval_options(task: str, kind: str, given: dict[str, Any]) -> dict[str, Any]:
    """The `given` options (None dropped) checked and converted; an unknown one, or one given
    for a task or kind of model it does not apply to, is refused in one sentence."""
    given = {
        k: (",".join(map(str, v)) if k == "exclude" and isinstance(v, (list, tuple)) else v) for k, v in given.items()
    }
    checked = check_options("eval", tuple(entry.option for entry in EVAL_OPTIONS), given)
    for name in checked:
        entry = eval_option(name)
        if task not in entry.tasks:
            raise UsageError(f"eval option {entry.option.flag} applies to {', '.join(entry.tasks)}, not {task}.")
        if entry.models and kind not in entry.models:
            raise UsageError(
                f"eval option {entry.option.flag} applies to {', '.join(m + ':' for m in entry.models)} models, "
                f"not {kind}."
            )
    return checked


def model_options(checked: dict[str, Any]) -> dict[str, Any]:
    """The checked options a kind of task model's `load` takes as keyword arguments."""
    return {name: value for name, value in checked.items() if eval_option(name).where == "model"}


def excluded_keys(checked: dict[str, Any]) -> list[str]:
    """The keys `exclude` names, in its order, blanks dropped."""
    return [key.strip() for key in str(checked.get("exclude") or "").split(",") if key.strip()]
