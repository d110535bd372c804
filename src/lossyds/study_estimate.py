"""The plan `build --spec --dry-run` prints: per run what is present, missing or cannot run
here, and what the missing runs would take, in time and disk, extrapolated from a few samples
built on this machine in a temporary folder. Measured times include model loading once per run;
they are estimates. (`eval --spec --dry-run`'s plan is study_eval's, measured the same way.)
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .manifest import MANIFEST_NAME

TRIAL_SAMPLES = 3  # samples built or scored per run to measure it


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measure_build(options: Any) -> dict[str, float]:
    """Build the first TRIAL_SAMPLES samples of a run into a temporary folder: {samples: the
    run's whole count, seconds: the whole run's estimate, bytes: its shards' estimate}."""
    from .builder.pipeline import build, plan

    total = len(plan(dataclasses.replace(options, part=None)).refs)
    stamps: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="lossyds-dry-run-") as folder:
        trial = dataclasses.replace(options, out=Path(folder) / "trial", limit=min(TRIAL_SAMPLES, total), force=False)
        start = time.perf_counter()
        manifest = build(trial, lambda done, _: stamps.append((time.perf_counter(), done)))
        end = time.perf_counter()
    measured = max(1, manifest["num_samples"])
    per_sample = (end - start) / measured
    if len(stamps) >= 2 and stamps[-1][1] > stamps[0][1]:  # steady rate: start-up (model loading) left out
        per_sample = (stamps[-1][0] - stamps[0][0]) / (stamps[-1][1] - stamps[0][1])
    startup = max(0.0, (end - start) - per_sample * measured)
    return {
        "samples": total,
        "seconds": startup + per_sample * total,
        "bytes": manifest["bits"]["container"] / 8 / measured * total,
    }


def print_build_plan(
    plans: list[tuple[str, Any]], problems: dict[str, str], force: bool, echo: Callable[[str], None]
) -> None:
    """One line per run: present, unavailable (why) or missing (its estimate); then the totals."""
    seconds = size = 0.0
    for name, options in plans:
        if name in problems:
            echo(f"unavailable {name}: {problems[name]}")
        elif (Path(options.out) / MANIFEST_NAME).exists() and not force:
            echo(f"present {name}: {options.out}")
        else:
            try:
                found = measure_build(options)
            except Exception as exc:  # the estimate is advice: a run that cannot be measured is said so
                echo(f"missing {name}: cannot be measured here ({exc.__class__.__name__}: {exc})")
                continue
            seconds += found["seconds"]
            size += found["bytes"]
            echo(
                f"missing {name}: {found['samples']} samples, about {duration_text(found['seconds'])} and "
                f"{found['bytes'] / 1e6:.1f} MB (measured on {min(TRIAL_SAMPLES, found['samples'])} samples here)"
            )
    echo(f"to build: about {duration_text(seconds)} and {size / 1e6:.1f} MB on this machine; nothing was built.")
