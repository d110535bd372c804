"""`lossyds eval --spec NAME --out OUT`: every evaluation of every built run of a study.

Each variant of each run (builder/study_runs.py) is scored with each model of its evaluation,
the result written into the build's folder as eval-TASK--MODEL--VARIANT.json (so that two
models or two variants of one build never overwrite each other, nor a plain `lossyds eval`'s
eval-TASK.json). A result newer than its build is done and skipped, so a second run does
nothing. Before anything runs, what cannot run is listed: a run not built yet, a model whose
files are not on this machine (with the exact place to put them, as its kind of task model
says). `--dry-run` prints that plan instead, each evaluation to run with an estimate of its time
extrapolated from a few samples scored here (the trial result file removed afterwards).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .builder.study_runs import StudyRun, study_runs
from .errors import LossydsError, UsageError
from .manifest import MANIFEST_NAME

DONE, READY, NOT_BUILT, NO_MODEL = "done", "ready", "not built", "model missing"
TRIAL_SAMPLES = 3  # samples `--dry-run` scores per evaluation and model to measure it


@dataclass(frozen=True)
class EvalJob:
    """One evaluation of a study: one variant of one run, scored with one model."""

    study_run: StudyRun
    task: str
    model: str
    folder: Path  # the build it scores
    result: Path  # where its result is written

    @property
    def label(self) -> str:
        return f"{self.study_run.name} ({self.study_run.variant}, {self.model})"


def result_name(task: str, model: str, variant: str) -> str:
    """eval-TASK--MODEL--VARIANT.json, the model spelled with only [A-Za-z0-9._-]."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")
    return f"eval-{task}--{slug}--{variant}.json"


def plan_evaluations(spec: dict[str, Any], out: Path) -> list[EvalJob]:
    """Every (variant, model) evaluation of `spec`'s evaluated runs, in the file's order."""
    jobs = []
    for variant in study_runs(spec):
        if variant.evaluation is None:
            continue
        entry = spec["evaluations"][variant.evaluation]
        folder = Path(out) / variant.folder
        for model in entry["models"]:
            result = folder / result_name(entry["task"], model, variant.variant)
            jobs.append(EvalJob(variant, entry["task"], model, folder, result))
    return jobs


def model_missing(model: str, task: str) -> str | None:
    """One sentence on where `model`'s files go when they are not on this machine, else None."""
    from .eval.registry import model_kind

    kind, argument = model_kind(model, task)
    return None if kind.missing is None else kind.missing(argument)


def job_state(job: EvalJob, missing: dict[str, str | None]) -> tuple[str, str | None]:
    """(DONE, READY, NOT_BUILT or NO_MODEL, the reason where it cannot run). `missing` caches
    model_missing per model."""
    manifest = job.folder / MANIFEST_NAME
    if not manifest.is_file():
        return NOT_BUILT, f"{job.folder} is not built (run `lossyds build --spec` with the same --out first)"
    if job.result.is_file() and job.result.stat().st_mtime >= manifest.stat().st_mtime and _same_options(job):
        return DONE, None
    if job.model not in missing:
        missing[job.model] = model_missing(job.model, job.task)
    reason = missing[job.model]
    return (NO_MODEL, reason) if reason else (READY, None)


def _same_options(job: EvalJob) -> bool:
    """Whether the stored result was scored with the options the study file gives now (an edited
    `exclude` list or switch makes it stale)."""
    from .eval.options import check_eval_options
    from .eval.registry import model_kind

    try:
        recorded = json.loads(job.result.read_text()).get("options") or {}
    except (OSError, ValueError):
        return False
    kind, _ = model_kind(job.model, job.task)
    return recorded == check_eval_options(job.task, kind.name, dict(job.study_run.eval_options))


def job_states(jobs: list[EvalJob]) -> list[tuple[EvalJob, str, str | None]]:
    missing: dict[str, str | None] = {}
    return [(job, *job_state(job, missing)) for job in jobs]


def samples_of(folder: Path) -> int:
    return int(json.loads((folder / MANIFEST_NAME).read_text())["num_samples"])


def run_job(job: EvalJob, device: str, cores: int | None, progress: Callable[[int, int], None] | None) -> dict:
    """Score one job and write its result, marked with the study run and variant it belongs to."""
    from .eval import evaluate
    from .manifest import write_json_atomic

    result = evaluate(
        job.folder,
        job.task,
        job.model,
        cores=cores,
        device=device,
        progress=progress,
        result_name=job.result.name,
        **job.study_run.eval_options,
    )
    result["study"] = {"run": job.study_run.name, "variant": job.study_run.variant}
    write_json_atomic(job.result, result)
    return result


def cannot_run_lines(states: list[tuple[EvalJob, str, str | None]]) -> list[str]:
    """What cannot run, in words: each missing model once (with where to put it), then each
    run not built."""
    lines = []
    models = {}
    for job, state, reason in states:
        if state == NO_MODEL:
            models.setdefault(job.model, (reason, []))[1].append(job.study_run.name)
    for model, (reason, runs) in models.items():
        lines.append(f"missing model {model}: {reason} (needed by {len(set(runs))} run(s))")
    not_built = sorted({(job.study_run.folder, reason) for job, state, reason in states if state == NOT_BUILT})
    lines += [f"missing data {folder}: {reason}" for folder, reason in not_built]
    return lines


def run_study_evaluations(
    spec_path: str | Path,
    out: Path | None,
    *,
    device: str,
    cores: int | None,
    echo: Callable[[str], None],
    progress_bar: Callable[[str], Any],
    dry_run: bool = False,
) -> int:
    """Run every evaluation of the study at `spec_path` whose build is in `out` and whose model is
    here, skipping those done; returns how many could not run (listed through `echo`)."""
    from .builder.spec import load_spec

    spec = load_spec(spec_path)
    if not spec.get("evaluations"):
        raise UsageError(f"--spec {spec_path} names no `evaluations:`; there is nothing to evaluate.")
    base = Path(out or spec.get("out") or "out")
    states = job_states(plan_evaluations(spec, base))
    if dry_run:
        print_eval_plan(states, device, cores, echo)
        return 0
    blocked = cannot_run_lines(states)
    for line in blocked:
        echo(line)
    ready = [job for job, state, _ in states if state == READY]
    done = sum(state == DONE for _, state, _ in states)
    if not ready:
        cannot = len(states) - done
        echo(
            f"nothing to do: {done} of {len(states)} evaluations are done in {base}"
            + (f"; {cannot} cannot run here (listed above)." if cannot else ".")
        )
        return len(states) - done
    totals = [samples_of(job.folder) for job in ready]
    with progress_bar(f"eval {len(ready)} of {len(states)}") as bar:
        task = bar.add_task("grid", total=sum(totals))
        finished = failed = 0
        for job, total in zip(ready, totals):
            try:
                result = run_job(job, device, cores, lambda n, _, base=finished: bar.update(task, completed=base + n))
            except LossydsError as exc:  # one sentence; the other evaluations still run, a rerun retries it
                failed += 1
                echo(f"failed {job.label}: {exc}")
            else:
                echo(f"scored {job.label}: {result['num_evaluated']} samples -> {job.result}")
            finished += total
            bar.update(task, completed=finished)
    echo(f"{done + len(ready) - failed} of {len(states)} evaluations are done in {base}.")
    return len(states) - done - len(ready) + failed


def measure_eval(job: Any, device: str, cores: int | None) -> dict[str, float]:
    """Score the first TRIAL_SAMPLES samples of a job's build (the result file removed after):
    {samples, seconds: the whole job's estimate, load: model loading and start-up}."""
    from .eval import evaluate

    trial = f".dry-run-{job.result.name}"
    try:
        result = evaluate(
            job.folder,
            job.task,
            job.model,
            cores=cores,
            device=device,
            limit=TRIAL_SAMPLES,
            result_name=trial,
            **job.study_run.eval_options,
        )
    finally:
        (job.folder / trial).unlink(missing_ok=True)
    total = samples_of(job.folder)
    rate = result["run"]["samples_per_second"] or result["num_evaluated"] / max(result["run"]["seconds"], 1e-9)
    load = max(0.0, result["run"]["seconds"] - result["num_evaluated"] / rate)
    return {"samples": total, "seconds": load + total / rate, "load": load}


def print_eval_plan(states: list[tuple[Any, str, str | None]], device: str, cores: int | None, echo: Callable) -> None:
    """One line per evaluation: done, cannot run (why) or to run (its estimate, from the first
    job of each evaluation and model measured here, scaled by sample count); then the total."""
    from .study_estimate import duration_text

    measured: dict[tuple[str, str], dict[str, float]] = {}
    seconds = 0.0
    for job, state, reason in states:
        if state == DONE:
            echo(f"done {job.label}: {job.result}")
            continue
        if state != READY:
            echo(f"{state} {job.label}: {reason}")
            continue
        key = (job.study_run.evaluation or "", job.model)
        if key not in measured:
            try:
                measured[key] = measure_eval(job, device, cores)
            except Exception as exc:  # advice only: said, not raised
                echo(f"to run {job.label}: cannot be measured here ({exc.__class__.__name__}: {exc})")
                continue
        found = measured[key]
        per_sample = (found["seconds"] - found["load"]) / max(found["samples"], 1)
        estimate = found["load"] + per_sample * samples_of(job.folder)
        seconds += estimate
        echo(f"to run {job.label}: {samples_of(job.folder)} samples, about {duration_text(estimate)} on {device}")
    echo(f"to evaluate: about {duration_text(seconds)} on {device}; nothing was scored.")
