"""What a task and a kind of task model declare (`Task`, `Score`, `TaskModel`), and the
adapter that turns a plain `module:function` into what a task's run function calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Score:
    """One score a task writes into eval-TASK.json.

    `path` is where it sits in the result (default: the top-level key `name`); `plotted`
    scores get a panel in `lossyds report`; `printed` ones are shown by `lossyds eval`;
    `fallbacks` are the scores a study's score is read from when this one is missing, nearest
    first."""

    name: str
    higher_is_better: bool
    unit: str
    help: str
    path: tuple[str, ...] = ()
    plotted: bool = False
    printed: bool = True
    fallbacks: tuple[str, ...] = ()

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def value(self, result: dict[str, Any]) -> Any:
        """This score's value in an eval result, or None where the result has none."""
        found: Any = result
        for key in self.path or (self.name,):
            if not isinstance(found, dict) or key not in found:
                return None
            found = found[key]
        return found


@dataclass(frozen=True)
class Outcome:
    """A task's per-sample outcome: `measure(sample record)` gives its value, or None where the
    record has none."""

    name: str
    higher_is_better: bool
    unit: str
    measure: Callable[[dict[str, Any]], float | None]


# run(samples, model, device, dataset=...) -> scores with "samples"
Runner = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """A task `lossyds eval --task NAME` scores. `scores[0]` is the task's headline score (the
    one a study figure plots); `transform` prepares each decoded sample in the decode threads or
    workers (a task model may bring its own, see `TaskModel.transforms`); `run` scores the
    samples with a loaded model; `from_function` adapts a plain function with the task's
    `module:function` contract into what `run` calls."""

    name: str
    modality: str
    default_model: str | None
    scores: tuple[Score, ...]
    outcome: Outcome
    run: Runner
    from_function: Callable[[Callable, torch.device], Any]
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    batch: int = 1  # samples per call for models that take batches

    @property
    def headline(self) -> Score:
        return self.scores[0]


@dataclass(frozen=True)
class TaskModel:
    """A kind of task model, chosen by `--model NAME` (`takes_argument` False, e.g.
    `pocketsphinx`) or `--model NAME:ARGUMENT` (e.g. `hf:ID_OR_PATH`).

    `load(argument, task, device, batch)` returns what the task's run function calls (see each
    task module's adapter) or a plain function with the `module:function` contract of that
    task, which is then adapted as one. `tasks` are the tasks it serves; `transforms` maps a
    task to the decode-side transform this kind needs instead of the task's own; `missing`
    says, before anything loads, whether the model's files are here and where they go."""

    name: str
    tasks: tuple[str, ...]
    load: Callable[[str, str, torch.device, int], Any]
    spelling: str = ""
    summary: str = ""  # what the model is and where its files come from, for `--model`'s help
    takes_argument: bool = True
    transforms: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    # missing(argument): None where the model's files are on this machine, else one sentence
    # naming what is missing and the exact place to put it (None for kinds that cannot tell)
    missing: Callable[[str], str | None] | None = None

    @property
    def shown(self) -> str:
        return self.spelling or (f"{self.name}:ARGUMENT" if self.takes_argument else self.name)
