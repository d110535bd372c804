"""A study's runs in their two variants: as lossyds does it ("corrected") and as the study did it
("as-published").

A study file's run may say how the study's own code departed from lossyds's defaults, under
`as_published` (on the run, or on its evaluation for every run of it):

    as_published:
      build: {KEY: VALUE}   # build switches (codec or dataset options): the variant has a build
                            # of its own, OUT/<name>--as-published/
      eval: {KEY: VALUE}    # evaluation switches (`lossyds.eval.evaluate` keyword arguments):
                            # without build switches, the variant scores the corrected build
      why: TEXT             # the cause of the difference, in words, for the report's tables

A run with no `as_published` (nor its evaluation) has one variant, which stands for both.
The corrected variant's evaluation options are the evaluation's `eval_options` (default none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CORRECTED = "corrected"
AS_PUBLISHED = "as-published"
VARIANTS = (CORRECTED, AS_PUBLISHED)
AS_PUBLISHED_KEYS = ("build", "eval", "why")


@dataclass(frozen=True)
class StudyRun:
    """One variant of one run of a study.

    name: the study run's name (its published numbers are keyed by it); variant: CORRECTED or
    AS_PUBLISHED; folder: its build's folder name under OUT; run: the build settings (the spec's
    run with the variant's build switches); own_build: whether this variant has a build of its
    own (False: it scores the corrected variant's build); evaluation: the name of its evaluation
    (None: not evaluated); eval_options: keyword arguments for `evaluate`; why: the causes of the
    difference from the other variant, in words."""

    name: str
    variant: str
    folder: str
    run: dict[str, Any]
    own_build: bool
    evaluation: str | None
    eval_options: dict[str, Any] = field(default_factory=dict)
    why: tuple[str, ...] = ()


def variant_folder(name: str) -> str:
    return f"{name}--{AS_PUBLISHED}"


def _as_published(spec: dict[str, Any], run: dict[str, Any]) -> tuple[dict, dict, tuple[str, ...]] | None:
    """(build switches, eval switches, causes) of a run's as-published variant, or None when
    neither the run nor its evaluation names one."""
    evaluation = (spec.get("evaluations") or {}).get(run.get("evaluation")) or {}
    parts = [part for part in (evaluation.get("as_published"), run.get("as_published")) if part]
    if not parts:
        return None
    build: dict[str, Any] = {}
    evaluate: dict[str, Any] = {}
    why: list[str] = []
    for part in parts:
        build.update(part.get("build") or {})
        evaluate.update(part.get("eval") or {})
        if part.get("why"):
            why.append(str(part["why"]))
    return build, evaluate, tuple(why)


def run_metrics(spec: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The quality metrics a run's build computes: the run's `metrics`, else its evaluation's."""
    if run.get("metrics") is not None:
        return list(run["metrics"])
    evaluation = (spec.get("evaluations") or {}).get(run.get("evaluation")) or {}
    return list(evaluation.get("metrics") or [])


def study_runs(spec: dict[str, Any]) -> list[StudyRun]:
    """Every variant of every run of `spec`, in the file's order, the corrected one first."""
    found = []
    for run in spec["runs"]:
        evaluation = run.get("evaluation")
        entry = (spec.get("evaluations") or {}).get(evaluation) or {}
        base = dict(entry.get("eval_options") or {})
        found.append(StudyRun(run["name"], CORRECTED, run["name"], run, True, evaluation, base))
        variant = _as_published(spec, run)
        if variant is None:
            continue
        build, evaluate, why = variant
        folder = variant_folder(run["name"]) if build else run["name"]
        variant_run = {k: v for k, v in run.items() if k != "as_published"} | build | {"name": folder}
        found.append(
            StudyRun(run["name"], AS_PUBLISHED, folder, variant_run, bool(build), evaluation, base | evaluate, why)
        )
    return found


def build_runs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs `build --spec` builds: each run, then each as-published variant with build
    switches of its own (named NAME--as-published), without the study-only keys."""
    return [
        {k: v for k, v in variant.run.items() if k != "as_published"}
        for variant in study_runs(spec)
        if variant.own_build
    ]
