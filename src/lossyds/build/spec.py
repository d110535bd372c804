"""Declarative build grids: `lossyds build --spec FILE` runs every (dataset x codec x rate) entry.

    roots:                       # where each dataset lives; $VARS are expanded
      imagenet: $IMAGENET_ROOT
    defaults: {shard_samples: 1000}
    runs:
      - {name: imagenet-val-jpeg-q5, dataset: imagenet, split: val, codec: jpeg, quality: 5}

Run keys: name, dataset, split, codec, shard_samples, shard_mb, shard_format, and the
codec's and the dataset's declared options by name (quality, kbps, weights, chunk_seconds,
...: the same options the CLI offers as flags); `codec_options: {...}` sets codec options too.
Each run writes OUT/<name>/ (OUT from --out, else the spec's `out`), so a name is one
folder name. The whole spec (types, ranges, every run's options) is checked before the first
run starts. Finished runs are left alone, interrupted ones resume. Runs whose codec is not
registered or whose root is missing stop the grid before anything is built, or are skipped
with --skip-unavailable (and listed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

from .. import codecs, sources
from ..errors import OptionError, UsageError
from ..manifest import MANIFEST_NAME
from ..options import Option, check_options
from .options import BuildOptions
from .pipeline import build

RUN_KEYS = ("name", "dataset", "split", "codec", "shard_samples", "shard_mb", "shard_format", "codec_options", "params")
SPEC_KEYS = ("roots", "defaults", "runs", "out")

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


def load_spec(path: Path) -> dict[str, Any]:
    """The spec at `path`, checked whole (its layout, every run's name, keys, types and option
    values) so that a spec with any run that cannot run stops before one run builds or deletes."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} cannot be read as text: {exc}.") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(exc).split())}.") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise UsageError(f"{path} needs a non-empty `runs:` list.")
    check_layout(path, spec)
    names: set[str] = set()
    for number, run in enumerate(spec["runs"], 1):
        if not isinstance(run, dict) or not {"name", "dataset", "codec"} <= set(run):
            raise UsageError(f"{path}: run {number} needs name, dataset and codec.")
        check_run_name(path, number, run["name"])
        if run["name"] in names:
            raise UsageError(f"{path}: two runs are named {run['name']!r}.")
        names.add(run["name"])
        try:
            check_run(path, spec, run)
        except OptionError as exc:  # named by its spec key, as the spec spells it
            raise UsageError(f"{path}: run {run['name']!r}: {str(exc).strip()}") from None
    return spec


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


def run_options(
    spec: dict[str, Any], run: dict[str, Any], out: Path, workers: int, force: bool, limit: int | None
) -> BuildOptions:
    merged, codec_options, source_options = run_settings(spec, run)
    root = (spec.get("roots") or {}).get(merged["dataset"])
    return BuildOptions(
        codec=merged["codec"],
        out=out / merged["name"],
        codec_options=codec_options,
        dataset=merged["dataset"],
        root=Path(os.path.expandvars(str(root))).expanduser() if root else None,
        split=merged.get("split"),
        source_options=source_options,
        shard_samples=int(merged.get("shard_samples", 1000)),
        shard_mb=float(merged.get("shard_mb", 1024)),
        shard_format=str(merged.get("shard_format", "auto")),
        workers=workers,
        force=force,
        limit=limit,
    )


def unavailable_reason(options: BuildOptions) -> str | None:
    if options.codec not in codecs.available():
        return f"codec {options.codec!r} is not in this lossyds (available: {', '.join(codecs.available())})"
    cls = codecs.codec_class(options.codec)
    if hasattr(cls, "package_installed") and not cls.package_installed():
        hint = getattr(cls, "install_hint", None)  # where the package is not in an extra's plain install
        return f"codec {options.codec!r} needs the {cls.package} package, which is not installed" + (
            f" ({hint})" if hint else ""
        )
    if options.dataset.startswith(sources.HF_PREFIX):
        reason = hf_unavailable_reason(options)
        if reason is not None:
            return reason
    elif options.dataset not in sources.available():
        return f"dataset {options.dataset!r} is unknown"
    elif options.dataset != "sample" and (options.root is None or not options.root.is_dir()):
        return f"root of {options.dataset!r} ({options.root}) is not a folder; set it under `roots:`"
    return weights_unavailable_reason(options)


def hf_unavailable_reason(options: BuildOptions) -> str | None:
    """A hf: dataset runs from a local copy under `roots:`, or from the Hub (its cache when offline)."""
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        return "hf: datasets need the datasets package (pip install 'lossyds[hub]')"
    if options.root is not None and options.root.exists():
        return None
    if options.root is not None and "$" not in str(options.root):
        return f"root of {options.dataset!r} ({options.root}) does not exist"
    name = options.dataset[len(sources.HF_PREFIX) :]
    online = ("", "0", "false", "no", "off")
    if (
        os.environ.get("HF_DATASETS_OFFLINE", "").lower() not in online
        or os.environ.get("HF_HUB_OFFLINE", "").lower() not in online
    ):
        try:
            from huggingface_hub import scan_cache_dir

            cached = {repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "dataset"}
        except Exception:
            cached = set()
        if name not in cached:
            return f"{name} is not in the Hugging Face cache and this machine is offline; set its local copy under `roots:`"
    return None


def weights_unavailable_reason(options: BuildOptions) -> str | None:
    """A neural codec without a weights option needs its pretrained file in a weights folder."""
    cls = codecs.codec_class(options.codec)
    if not getattr(cls, "uses_weights", False) or options.codec_options.get("weights"):
        return None
    from ..weights import cache_dirs

    try:
        filename, url = codecs.get(options.codec, **options.codec_options).pretrained_source()
    except Exception:
        return None  # any problem with the codec itself is the build's to report, in its own words
    if any((folder / filename).is_file() for folder in cache_dirs()):
        return None
    if url and not os.environ.get("LOSSYDS_NO_DOWNLOAD"):
        return None  # the build downloads it
    places = " or ".join(str(folder / filename) for folder in cache_dirs())
    return f"pretrained weights {filename} are not here (put them at {places})"


def run_spec(
    path: Path,
    out: Path | None,
    *,
    force: bool,
    workers: int,
    skip_unavailable: bool,
    limit: int | None,
    echo: Callable[[str], None],
    progress: Callable,
) -> list[dict[str, Any]]:
    """Run every entry of a spec; returns the manifests built (or found finished)."""
    from ..manifest import achieved_rate_text

    spec = load_spec(path)
    base = Path(out or spec.get("out") or "out")
    plans = [(run["name"], run_options(spec, run, base, workers, force, limit)) for run in spec["runs"]]
    problems = {name: reason for name, options in plans if (reason := unavailable_reason(options))}
    if problems and not skip_unavailable:
        listed = "; ".join(f"{n}: {r}" for n, r in problems.items())
        raise UsageError(f"{len(problems)} run(s) cannot run here ({listed}); pass --skip-unavailable to run the rest.")
    manifests = []
    for name, options in plans:
        if name in problems:
            echo(f"skip {name}: {problems[name]}")
            continue
        if (options.out / MANIFEST_NAME).exists() and not force:
            echo(f"done {name}: {options.out} is already built")
            continue
        manifest = progress(f"{name}", build, options)
        echo(
            f"built {name}: {manifest['num_samples']} samples, {achieved_rate_text(manifest)}, {manifest['num_skipped']} skipped -> {options.out}"
        )
        manifests.append(manifest)
    return manifests
