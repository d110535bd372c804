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
run starts (the checks are in spec_checks.py). Finished runs are left alone, interrupted ones resume. Runs whose codec is not
registered or whose root is missing stop the grid before anything is built, or are skipped
with --skip-unavailable (and listed).

A study is the same file with more in it (`studies/mpq-2024.yaml`, shipped with lossyds and
found by name: `--spec mpq-2024`): `study` and `source` (what it is), `evaluations` (per set of
runs: the task, the study's models, its score and metrics), each run's `evaluation`, and
`published` (the study's numbers, keyed by run name). `lossyds report --published NAME` reads
the numbers; the build reads the runs. A run's `metrics` (else its evaluation's) are computed
at build time, and a run whose `as_published` variant has build switches of its own is built a
second time as NAME--as-published (study_runs.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import codecs, sources
from ..errors import OptionError, UsageError
from ..manifest import MANIFEST_NAME
from .build_options import BuildOptions
from .pipeline import build
from .spec_checks import check_layout, check_run, check_run_name, check_study, run_is_lossless, run_settings
from .study_runs import build_runs, run_metrics


def shipped_studies() -> list[str]:
    """The names of the studies (grids) lossyds ships: `studies/NAME.yaml` in the package."""
    folder = resources.files("lossyds").joinpath("studies")
    return sorted(item.name[: -len(".yaml")] for item in folder.iterdir() if item.name.endswith(".yaml"))


def resolve_spec(spec: str | Path) -> Path:
    """The file `--spec` names: a path, or the name of a study lossyds ships. A name (no `/`,
    no `.yaml`) is a shipped study unless a file of that name is here, so that a study is usable
    from any folder after a plain install."""
    text = str(spec)
    if Path(text).is_file() or "/" in text or os.sep in text or text.endswith((".yaml", ".yml")):
        return Path(text)
    if text not in shipped_studies():
        raise UsageError(
            f"--spec {text}: no such file, and no study lossyds ships has that name "
            f"(shipped: {', '.join(shipped_studies())})."
        )
    # the package's own folder: a wheel installs it as plain files
    return Path(str(resources.files("lossyds").joinpath("studies", f"{text}.yaml")))


def load_spec(path: str | Path) -> dict[str, Any]:
    """The spec at `path` (a file, or a shipped study's name), checked whole (its layout, every
    run's name, keys, types and option values, and a study's evaluations and published numbers)
    so that a spec with any run that cannot run stops before one run builds or deletes."""
    path = resolve_spec(path)
    if not path.is_file():
        raise UsageError(f"--spec {path}: no such file.")
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
    check_study(path, spec)
    names = {run["name"] for run in spec["runs"]}
    for run in (run for run in build_runs(spec) if run["name"] not in names):  # as-published builds
        try:
            check_run(path, spec, run)
        except OptionError as exc:
            raise UsageError(f"{path}: run {run['name']!r} (as published): {str(exc).strip()}") from None
    return spec


def published_sets(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A study's published numbers per evaluation, as `lossyds report` matches builds to them:
    the datasets, split and dataset options of its runs, each model's baseline (its lossless
    run's score) and per-codec scores, and per codec the build settings that reproduce it."""
    sets: dict[str, dict[str, Any]] = {}
    for name, entry in (spec.get("evaluations") or {}).items():
        runs = [run for run in spec["runs"] if run.get("evaluation") == name]
        if not runs:
            continue
        merged = [run_settings(spec, run) for run in runs]
        # the report names a model as its id, without the `--model` kind (hf:, demucs:, ...)
        models = [model.split(":", 1)[-1] for model in entry["models"]]
        by_spelling = dict(zip(entry["models"], models))
        # a revision says where the data is read from, not which data: builds from a local copy match too
        options = {k: v for k, v in merged[0][2].items() if k != "hf_revision"}
        found: dict[str, Any] = {
            **{
                k: entry[k]
                for k in ("title", "task", "score", "score_label", "rate_unit", "samples", "note", "figure")
                if k in entry
            },
            "match": sorted({run["dataset"] for run in runs}) + list(entry.get("also_matches") or []),
            "split": merged[0][0].get("split"),
            "options": options,
            "models": {model: {"baseline": None, "runs": {}} for model in models},
            "figure_model": models[0],
            "codecs": {},
            "rates_as_published": {},
        }
        for run, (settings, codec_options, _) in zip(runs, merged):
            numbers = (spec.get("published") or {}).get(run["name"])
            if numbers is None:
                continue
            scores = {by_spelling[model]: value for model, value in numbers["scores"].items()}
            if run_is_lossless(run):
                for model, value in scores.items():
                    found["models"][model]["baseline"] = value
                continue
            key = numbers["as"]
            codec = {"lossyds": {"codec": settings["codec"], **codec_options}}
            if numbers.get("note"):
                codec["note"] = numbers["note"]
            if numbers.get("rate_scale") is not None:
                codec["published_rate_scale"] = numbers["rate_scale"]
            found["codecs"][key] = codec
            found["rates_as_published"][key] = numbers["rate"]
            for model, value in scores.items():
                found["models"][model]["runs"][key] = value
        # a model without a lossless run's score has no baseline: `lossyds report` refuses it by name
        found["models"] = {
            m: {k: v for k, v in n.items() if v is not None}
            for m, n in found["models"].items()
            if n["baseline"] is not None or n["runs"]
        }
        if found["models"]:
            sets[name] = found
    return sets


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
        metrics=run_metrics(spec, run),
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
    return weights_unavailable_reason(options) or metrics_unavailable_reason(options)


def metrics_unavailable_reason(options: BuildOptions) -> str | None:
    """A run's quality metrics need their packages and weight files (loaded here once, as the
    build's own check does), so that a missing file lists the run instead of stopping the grid."""
    if not options.metrics:
        return None
    from .. import metrics

    try:
        metrics.check_metrics(options.metrics, codecs.codec_class(options.codec).modality)
    except UsageError as exc:
        return str(exc).rstrip(".")
    return None


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
    path: str | Path,
    out: Path | None,
    *,
    force: bool,
    workers: int,
    skip_unavailable: bool,
    limit: int | None,
    echo: Callable[[str], None],
    progress: Callable,
    dry_run: bool = False,
    distributor: str = "local",
    ray_address: str | None = None,
    device: str = "cpu",
    encode_batch: int = 1,
) -> list[dict[str, Any]]:
    """Run every entry of a spec (and each as-published variant with a build of its own);
    returns the manifests built. dry_run: print what is present, missing or unavailable, with
    the time and disk each missing run would take, measured on a few samples; build nothing.
    distributor, ray_address, device, encode_batch: where and how every run encodes (BuildOptions),
    e.g. all on one Ray cluster, neural runs batched on a GPU."""
    from ..manifest import achieved_rate_text

    spec = load_spec(path)
    base = Path(out or spec.get("out") or "out")
    plans = [(run["name"], run_options(spec, run, base, workers, force, limit)) for run in build_runs(spec)]
    for _, options in plans:
        options.distributor, options.ray_address = distributor, ray_address
        if (device, encode_batch) != ("cpu", 1) and getattr(
            codecs.codec_class(options.codec), "batched_analysis", False
        ):
            options.device, options.encode_batch = device, encode_batch  # the grid's neural runs; others encode as ever
    problems = {name: reason for name, options in plans if (reason := unavailable_reason(options))}
    if dry_run:
        from ..study_estimate import print_build_plan

        print_build_plan(plans, problems, force, echo)
        return []
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
