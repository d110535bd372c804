"""Declarative build grids: `lossyds build --spec FILE` runs every (dataset x codec x rate) entry.

    roots:                       # where each dataset lives; $VARS are expanded
      imagenet: $IMAGENET_ROOT
    defaults: {shard_samples: 1000}
    runs:
      - {name: imagenet-val-jpeg-q5, dataset: imagenet, split: val, codec: jpeg, quality: 5}

Each run writes OUT/<name>/ (OUT from --out, else the spec's `out`). Finished runs are
left alone, interrupted ones resume. Runs whose codec is not registered or whose root
is missing stop the grid before anything is built, or are skipped with
--skip-unavailable (and listed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import yaml

from . import builders, codecs
from .build import BuildOptions, build
from .errors import UsageError
from .manifest import MANIFEST_NAME

RATE_KEYS = ("quality", "kbps", "bpp")
BUILDER_KEYS = ("chunk_seconds", "compress_stems")
RUN_KEYS = {"name", "dataset", "split", "codec", "shard_samples", "shard_mb", *RATE_KEYS, *BUILDER_KEYS, "params"}


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise UsageError(f"{path} needs a non-empty `runs:` list.")
    names = set()
    for number, run in enumerate(spec["runs"], 1):
        if not isinstance(run, dict) or not {"name", "dataset", "codec"} <= set(run):
            raise UsageError(f"{path}: run {number} needs name, dataset and codec.")
        unknown = set(run) - RUN_KEYS
        if unknown:
            raise UsageError(f"{path}: run {run['name']!r} has unknown keys {', '.join(sorted(unknown))}; valid: {', '.join(sorted(RUN_KEYS))}.")
        if run["name"] in names:
            raise UsageError(f"{path}: two runs are named {run['name']!r}.")
        names.add(run["name"])
    return spec


def run_options(spec: dict[str, Any], run: dict[str, Any], out: Path, workers: int, force: bool, limit: int | None) -> BuildOptions:
    merged = {**(spec.get("defaults") or {}), **run}
    roots = spec.get("roots") or {}
    root = roots.get(merged["dataset"])
    return BuildOptions(
        codec=merged["codec"],
        out=out / merged["name"],
        rate={**{k: merged[k] for k in RATE_KEYS if k in merged}, **(merged.get("params") or {})},
        dataset=merged["dataset"],
        root=Path(os.path.expandvars(str(root))).expanduser() if root else None,
        split=merged.get("split"),
        builder_options={k: merged[k] for k in BUILDER_KEYS if k in merged},
        shard_samples=int(merged.get("shard_samples", 1000)),
        shard_bytes=int(float(merged.get("shard_mb", 1024)) * 1e6),
        workers=workers,
        force=force,
        limit=limit,
    )


def unavailable_reason(options: BuildOptions) -> str | None:
    if options.codec not in codecs.available():
        return f"codec {options.codec!r} is not in this lossyds (available: {', '.join(codecs.available())})"
    if options.dataset not in builders.available():
        return f"dataset {options.dataset!r} is unknown"
    if options.dataset != "sample" and (options.root is None or not options.root.is_dir()):
        return f"root of {options.dataset!r} ({options.root}) is not a folder; set it under `roots:`"
    return None


def run_spec(path: Path, out: Path | None, *, force: bool, workers: int, skip_unavailable: bool, limit: int | None, echo: Callable[[str], None], progress: Callable) -> list[dict[str, Any]]:
    """Run every entry of a spec; returns the manifests built (or found finished)."""
    spec = load_spec(path)
    base = Path(out or spec.get("out") or "out")
    plans = [(run["name"], run_options(spec, run, base, workers, force, limit)) for run in spec["runs"]]
    problems = [(name, unavailable_reason(options)) for name, options in plans]
    problems = [(name, reason) for name, reason in problems if reason]
    if problems and not skip_unavailable:
        raise UsageError(f"{len(problems)} run(s) cannot run here ({'; '.join(f'{n}: {r}' for n, r in problems)}); pass --skip-unavailable to run the rest.")
    skipped = {name for name, _ in problems}
    manifests = []
    for name, options in plans:
        if name in skipped:
            echo(f"skip {name}: {dict(problems)[name]}")
            continue
        if (options.out / MANIFEST_NAME).exists() and not force:
            echo(f"done {name}: {options.out} is already built")
            continue
        manifest = progress(f"{name}", build, options)
        bits = manifest["bits"]
        rate = f"{bits['bpp']:.4f} bpp" if manifest["modality"] == "image" else f"{bits['kbps']:.3f} kbps"
        echo(f"built {name}: {manifest['num_samples']} samples, {rate}, {manifest['num_skipped']} skipped -> {options.out}")
        manifests.append(manifest)
    return manifests
