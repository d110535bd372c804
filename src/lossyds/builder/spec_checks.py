"""Whole-spec checks for `lossyds build --spec`: the layout, each run's name, keys, types and
option values (with `defaults`), and a study's parts (its evaluations and published numbers)
agreeing with each other, so that a spec with any run that cannot run stops before one run
builds or deletes. `lossyds.builder.spec.load_spec` runs them all.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .. import codecs, sources
from ..errors import UsageError
from ..options import Option, check_options

RUN_KEYS = (
    "name",
    "dataset",
    "split",
    "codec",
    "shard_samples",
    "shard_mb",
    "shard_format",
    "codec_options",
    "params",
    "evaluation",
    "metrics",
    "as_published",
)
SPEC_KEYS = ("roots", "defaults", "runs", "out", "study", "source", "evaluations", "published")
EVALUATION_KEYS = (
    "title",
    "task",
    "models",
    "score",
    "score_label",
    "metrics",
    "samples",
    "rate_unit",
    "note",
    "also_matches",
    "eval_options",
    "as_published",
    "figure",
    "quality_samples",
)
PUBLISHED_KEYS = ("scores", "as", "rate", "rate_scale", "note")

# The run keys that are the build's own settings, declared like the codecs' and the datasets'
# options so that one checker (lossyds.options) gives their types and ranges in the same words.
BUILD_OPTIONS = (
    Option("name", str, "The run's folder under OUT: one folder name."),
    Option("dataset", str, "The source dataset, as --dataset."),
    Option("codec", str, "The codec, as --codec."),
    Option("split", str, "The dataset's split, as --split."),
    Option("shard_samples", int, "Most samples per shard.", default=1000, span=(1, math.inf)),
    Option("shard_mb", float, "Most megabytes (10^6 bytes) per shard.", default=1024.0, span=(0.01, math.inf)),
    Option("shard_format", str, "Shard files.", default="auto", choices=("auto", "tar", "tar.gz", "tar.zst")),
)


def declared_keys(run: dict[str, Any]) -> tuple[set[str] | None, set[str] | None]:
    """The codec's and the dataset's option names for this run (None when it is unknown here:
    such a run is reported by unavailable_reason, not refused for its keys)."""
    try:
        codec_keys = {o.name for o in codecs.codec_class(run["codec"]).declared_options()}
    except UsageError:
        codec_keys = None
    try:
        source_keys = {o.name for o in sources.source_class(run["dataset"]).declared_options()}
    except UsageError:
        source_keys = None
    return codec_keys, source_keys


def run_settings(spec: dict[str, Any], run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the run with `defaults` under it, its codec options, its dataset options)."""
    merged = {**(spec.get("defaults") or {}), **run}
    codec_keys, source_keys = declared_keys(merged)
    codec_keys = (
        codec_keys if codec_keys is not None else set(merged) - set(RUN_KEYS)
    )  # unknown codec: kept for the report
    codec_options = {k: merged[k] for k in codec_keys if k in merged}
    codec_options.update(merged.get("codec_options") or merged.get("params") or {})
    source_options = {k: merged[k] for k in source_keys or () if k in merged}
    return merged, codec_options, source_options


def run_is_lossless(run: dict[str, Any]) -> bool:
    try:
        return bool(codecs.codec_class(run["codec"]).lossless)
    except UsageError:
        return False


def check_layout(path: Path, spec: dict[str, Any]) -> None:
    """The spec's top level: known keys, `roots` and `defaults` mappings, `out` text."""
    unknown = sorted(str(key) for key in spec if key not in SPEC_KEYS)
    if unknown:
        raise UsageError(
            f"{path} has unknown top-level keys {', '.join(map(repr, unknown))}; valid: {', '.join(SPEC_KEYS)}."
        )
    for key in ("roots", "defaults"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise UsageError(f"{path}: `{key}:` must be a mapping (got {type(spec[key]).__name__}).")
    for dataset, root in (spec.get("roots") or {}).items():
        if root is not None and not isinstance(root, str):
            raise UsageError(f"{path}: the root of {dataset!r} under `roots:` must be a folder path (got {root!r}).")
    if spec.get("out") is not None and not isinstance(spec["out"], str):
        raise UsageError(f"{path}: `out:` must be a folder path (got {spec['out']!r}).")


def check_run_name(path: Path, number: int, name: Any) -> None:
    """A run writes OUT/<name>/, so its name is one folder name: nothing that leaves OUT."""
    if not isinstance(name, str):
        raise UsageError(f"{path}: run {number}'s name {name!r} is not text; a run name is one folder name.")
    if (
        name.strip() in ("", ".", "..")
        or any(c in name for c in "/\\\0")
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).drive
    ):
        raise UsageError(
            f"{path}: run {number} is named {name!r}, which is not one folder name under the output folder "
            "(no /, \\, NUL, drive, '.' or '..')."
        )


def check_run(path: Path, spec: dict[str, Any], run: dict[str, Any]) -> None:
    """One run's keys and values, with `defaults`: the build's own settings (BUILD_OPTIONS), then
    the codec's and the dataset's declared options, and the codec's own rules for them."""
    label = f"run {run['name']!r}"
    merged = {**(spec.get("defaults") or {}), **run}
    for option in BUILD_OPTIONS:
        if merged.get(option.name) is not None:
            option.check("", merged[option.name])  # the run is named where the error is reported
    for key in ("codec_options", "params"):
        if merged.get(key) is not None and not isinstance(merged[key], dict):
            raise UsageError(f"{path}: {label} {key} must be a mapping of codec options (got {merged[key]!r}).")
    codec_keys, source_keys = declared_keys(merged)
    if codec_keys is None or source_keys is None:
        return  # reported as unavailable by run_spec
    unknown = set(merged) - set(RUN_KEYS) - codec_keys - source_keys
    if unknown:
        valid = sorted(set(RUN_KEYS) | codec_keys | source_keys)
        raise UsageError(
            f"{path}: {label} has unknown keys {', '.join(sorted(map(str, unknown)))}; valid here: {', '.join(valid)}."
        )
    _, codec_options, source_options = run_settings(spec, run)
    codec_class = codecs.codec_class(merged["codec"])
    check_options(codec_class.name, codec_class.declared_options(), codec_options)
    if not hasattr(codec_class, "package_installed") or codec_class.package_installed():
        # the codec's own rules: a rate it needs, options that exclude each other
        codecs.get(merged["codec"], **codec_options)
    source_class = sources.source_class(merged["dataset"])
    check_options(f"dataset {merged['dataset']!r}", source_class.declared_options(), source_options)
    split = merged.get("split")
    if split is not None and source_class.splits and split not in source_class.splits:
        raise UsageError(
            f"{path}: {label}: dataset {merged['dataset']!r} has no split {split!r}; "
            f"choose one of: {', '.join(source_class.splits)}."
        )
    if codec_class.modality not in source_class.modalities:
        raise UsageError(
            f"{path}: {label}: dataset {merged['dataset']!r} holds {' and '.join(source_class.modalities)} data; "
            f"the {codec_class.modality} codec {codec_class.name} cannot encode it."
        )


def check_study(path: Path, spec: dict[str, Any]) -> None:
    """A study's parts agree: every run's `evaluation` is one of `evaluations`, each evaluation
    names a known task, its models and a score of that task, and every published number belongs
    to a run of the file and a model of that run's evaluation."""
    evaluations = spec.get("evaluations") or {}
    if not isinstance(evaluations, dict):
        raise UsageError(f"{path}: `evaluations:` must be a mapping of evaluation names to settings.")
    for name, entry in evaluations.items():
        check_evaluation(path, name, entry)
    runs = {run["name"]: run for run in spec["runs"]}
    for run in runs.values():
        check_as_published(
            f"{path}: run {run['name']!r}: `as_published`",
            run.get("as_published"),
            evaluations.get(run["evaluation"]) if isinstance(run.get("evaluation"), str) else None,
        )
        if run.get("metrics") is not None and not (
            isinstance(run["metrics"], list) and all(isinstance(m, str) for m in run["metrics"])
        ):
            raise UsageError(f"{path}: run {run['name']!r}: `metrics:` must be a list of metric names.")
        if run.get("evaluation") is not None and (
            not isinstance(run["evaluation"], str) or run["evaluation"] not in evaluations
        ):
            raise UsageError(
                f"{path}: run {run['name']!r} names evaluation {run['evaluation']!r}, which `evaluations:` "
                f"does not list ({', '.join(map(str, evaluations)) or 'none'})."
            )
    published = spec.get("published") or {}
    if not isinstance(published, dict):
        raise UsageError(f"{path}: `published:` must be a mapping of run names to the study's numbers.")
    for name, numbers in published.items():
        where = f"{path}: published numbers of {name!r}"
        if name not in runs:
            raise UsageError(f"{where}: the file has no run of that name.")
        if runs[name].get("evaluation") is None:
            raise UsageError(f"{where}: run {name!r} names no `evaluation`, so its scores have no task or models.")
        if not isinstance(numbers, dict) or not isinstance(numbers.get("scores"), dict) or not numbers["scores"]:
            raise UsageError(f"{where} need `scores:`, each model's score.")
        unknown = sorted(str(key) for key in numbers if key not in PUBLISHED_KEYS)
        if unknown:
            raise UsageError(f"{where} have unknown keys {', '.join(unknown)}; valid: {', '.join(PUBLISHED_KEYS)}.")
        models = evaluations[runs[name]["evaluation"]]["models"]
        strays = sorted(str(m) for m in numbers["scores"] if m not in models)
        if strays:
            raise UsageError(f"{where}: {', '.join(strays)} is not a model of evaluation {runs[name]['evaluation']!r}.")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers["scores"].values()):
            raise UsageError(f"{where}: every score must be a number.")
        if run_is_lossless(runs[name]):
            if numbers.get("as") is not None or numbers.get("rate") is not None:
                raise UsageError(f"{where}: a lossless run is the study's baseline; it takes no `as` or `rate`.")
        elif not isinstance(numbers.get("as"), str) or not isinstance(numbers.get("rate"), (int, float)):
            raise UsageError(f"{where} need `as` (the study's name for the codec) and `rate` (as it reported it).")


def check_evaluation(path: Path, name: str, entry: Any) -> None:
    """One entry of a study's `evaluations`: its keys, task, models, score, metrics, figure panel
    and evaluation switches."""
    from .. import metrics
    from ..eval.registry import TASKS, task

    where = f"{path}: evaluation {name!r}"
    if not isinstance(entry, dict):
        raise UsageError(f"{where} must be a mapping (task, models, score, ...).")
    unknown = sorted(str(key) for key in entry if key not in EVALUATION_KEYS)
    if unknown:
        raise UsageError(f"{where} has unknown keys {', '.join(unknown)}; valid: {', '.join(EVALUATION_KEYS)}.")
    if entry.get("task") not in TASKS:
        raise UsageError(f"{where}: task {entry.get('task')!r} is not a lossyds task ({', '.join(TASKS)}).")
    models = entry.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise UsageError(f"{where} needs `models:`, a list of models as `lossyds eval --model` takes them.")
    scores = [score.name for score in task(entry["task"]).scores]
    if entry.get("score") is not None and entry["score"] not in scores:
        raise UsageError(
            f"{where}: score {entry['score']!r} is not one of task {entry['task']}'s ({', '.join(scores)})."
        )
    for key in ("metrics", "also_matches"):
        if entry.get(key) is not None and not (
            isinstance(entry[key], list) and all(isinstance(m, str) for m in entry[key])
        ):
            raise UsageError(f"{where}: `{key}:` must be a list of names.")
    modality = task(entry["task"]).modality
    strays = [name for name in entry.get("metrics") or () if metrics.find(name, modality) is None]
    if strays:
        raise UsageError(
            f"{where}: {', '.join(strays)} is not one of lossyds's {modality} metrics "
            f"({', '.join(metrics.metrics_of(modality))})."
        )
    first = entry.get("quality_samples")
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 1):
        raise UsageError(f"{where}: `quality_samples:` must be a whole number of samples >= 1 (got {first!r}).")
    check_figure(f"{where}: `figure`", entry.get("figure"))
    check_as_published(f"{where}: `as_published`", entry.get("as_published"), entry)
    check_eval_options(f"{where}: `eval_options`", entry.get("eval_options"), entry)


def check_as_published(where: str, part: Any, entry: dict[str, Any] | None = None) -> None:
    """An `as_published` entry: a mapping of `build` (codec and dataset options, checked with the
    variant's run), `eval` (evaluation switches) and `why` (text)."""
    from .study_runs import AS_PUBLISHED_KEYS

    if part is None:
        return
    if not isinstance(part, dict):
        raise UsageError(f"{where} must be a mapping of {', '.join(AS_PUBLISHED_KEYS)}.")
    unknown = sorted(str(key) for key in part if key not in AS_PUBLISHED_KEYS)
    if unknown:
        raise UsageError(f"{where} has unknown keys {', '.join(unknown)}; valid: {', '.join(AS_PUBLISHED_KEYS)}.")
    if part.get("build") is not None and not isinstance(part["build"], dict):
        raise UsageError(f"{where}: `build:` must be a mapping of codec and dataset options.")
    if part.get("why") is not None and not isinstance(part["why"], str):
        raise UsageError(f"{where}: `why:` must be text (the cause of the difference, in words).")
    check_eval_options(f"{where}: `eval`", part.get("eval"), entry)


def check_eval_options(where: str, options: Any, entry: dict[str, Any] | None = None) -> None:
    """Evaluation switches: a mapping of `lossyds eval`'s declared options (lossyds.eval.options),
    checked for the evaluation's task and each of its models when `entry` is given."""
    from ..errors import OptionError
    from ..eval.options import EVAL_OPTIONS
    from ..eval.options import check_eval_options as check_declared
    from ..eval.registry import model_kind

    if options is None:
        return
    if not isinstance(options, dict):
        raise UsageError(f"{where} must be a mapping of evaluation options.")
    valid = [item.option.name for item in EVAL_OPTIONS]
    unknown = sorted(str(key) for key in options if key not in valid)
    if unknown:
        raise UsageError(f"{where} has unknown options {', '.join(unknown)}; valid: {', '.join(valid)}.")
    for model in (entry or {}).get("models") or ():
        try:
            check_declared(entry["task"], model_kind(model, entry["task"])[0].name, dict(options))
        except (OptionError, UsageError) as exc:
            raise UsageError(f"{where}: {str(exc).strip()}") from None


FIGURE_KEYS = ("panel", "title", "x_label", "y_label", "xlim", "ylim", "plot", "codec_names")


def check_figure(where: str, figure: Any) -> None:
    """An evaluation's panel of the study's figure: known keys, limits as [low, high] numbers."""
    if figure is None:
        return
    if not isinstance(figure, dict):
        raise UsageError(f"{where} must be a mapping ({', '.join(FIGURE_KEYS)}).")
    unknown = sorted(str(key) for key in figure if key not in FIGURE_KEYS)
    if unknown:
        raise UsageError(f"{where} has unknown keys {', '.join(unknown)}; valid: {', '.join(FIGURE_KEYS)}.")
    for key in ("xlim", "ylim"):
        value = figure.get(key)
        if value is not None and not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[0] < value[1]
        ):
            raise UsageError(f"{where}: `{key}:` must be [low, high] numbers (got {value!r}).")
    if figure.get("plot") not in (None, "score", "one-minus"):
        raise UsageError(f"{where}: `plot:` is score or one-minus (got {figure['plot']!r}).")
    if figure.get("codec_names") is not None and not isinstance(figure["codec_names"], dict):
        raise UsageError(f"{where}: `codec_names:` must map the study's codec keys to the names it printed.")
