"""The reference study's figure and its published numbers beside measured runs
(`lossyds report DIR... --layout study [--published mpq-2024|FILE]`).

The figure is laid out as the study's (arXiv 2401.07957, results_summary.ipynb): one panel per
dataset, the task score against the rate (bits per pixel, or bits per audio sample of every
channel), one point per lossy build labelled with its codec, and the lossless build's score as a
dashed reference line. With a study file the published points and baseline are drawn in grey
beside them. A second figure puts each dataset's quality metrics against the same rate.

A study file (YAML, see `studies/mpq-2024.yaml`) holds the study's runs (the build settings),
each run's evaluation (task, models, score) and its published numbers keyed by run;
`build.spec.published_sets` turns them into the sets matched here: per set, the manifest
dataset names it matches, the task and score, each model's baseline and per-codec scores, the
lossyds codec settings that reproduce each codec, and the rates as the study reported them. A
file that lists those `sets` directly is read as it is.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UsageError
from .eval import tasks as eval_tasks
from .manifest import load_manifest

# The score each task is plotted by when no study file names one: the task's headline score.
TASK_SCORE = {task.name: task.headline.name for task in eval_tasks()}

# What a study's score is read from in an eval-TASK.json, in order: the study's own scoring
# first, then the nearest lossyds score (said in the table when a fallback is used); each
# task declares its scores' fallbacks.
SCORE_SOURCES: dict[str, tuple[str, ...]] = {
    score.name: (score.name, *score.fallbacks) for task in eval_tasks() for score in task.scores
}


def load_study(spec: str | Path) -> dict[str, Any]:
    """A study's published numbers: the name of a study lossyds ships (`mpq-2024`) or a YAML
    file's path (a study file with runs and `published`, or a file of `sets`)."""
    import yaml

    from .builder.spec import load_spec, published_sets, shipped_studies

    path = Path(spec)
    if str(spec) in shipped_studies() and not path.is_file():
        study, where = load_spec(str(spec)), f"lossyds's {spec}"
    else:
        if not path.is_file():
            raise UsageError(
                f"--published {spec}: neither a study lossyds ships ({', '.join(shipped_studies())}) nor a file."
            )
        where = str(path)
        try:
            study = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"{where} is not valid YAML: {exc}") from None
        if isinstance(study, dict) and "runs" in study:
            study = load_spec(path)  # the whole study file is checked, as `build --spec` checks it
    if isinstance(study, dict) and "runs" in study:
        study = {"study": study.get("study"), "source": study.get("source"), "sets": published_sets(study)}
    for name, entry in ((study or {}).get("sets") or {}).items():
        needed = {"match", "task", "score", "models", "codecs", "rates_as_published"}
        if not isinstance(entry, dict) or not needed <= set(entry):
            raise UsageError(f"{where}: set {name!r} needs {', '.join(sorted(needed))}.")
        for model, numbers in entry["models"].items():
            if not isinstance(numbers, dict) or "baseline" not in numbers or "runs" not in numbers:
                raise UsageError(f"{where}: set {name!r}, model {model!r} needs baseline and runs.")
            unknown = set(numbers["runs"]) - set(entry["codecs"])
            if unknown:
                raise UsageError(
                    f"{where}: set {name!r}, model {model!r} has runs of no listed codec: {sorted(unknown)}."
                )
        if entry.get("figure_model") is not None and entry["figure_model"] not in entry["models"]:
            raise UsageError(f"{where}: set {name!r}: figure_model {entry['figure_model']!r} is not one of its models.")
    if not (study or {}).get("sets"):
        raise UsageError(f"{where} lists no published numbers (no sets).")
    return study


def eval_scores(result: dict[str, Any]) -> dict[str, float]:
    """The scores of one eval-TASK.json, flattened: top1, miou, wer, wer_raw, sdr,
    bsseval_sdr, bsseval_sdr_mean_over_frames, ... (those present and numeric)."""
    scores = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in ("limit", "num_samples", "num_evaluated", "evaluated_bits_per_sample"):
        scores.pop(key, None)
    for name, value in (result.get("bsseval") or {}).items():
        if isinstance(value, (int, float)):
            scores[f"bsseval_{name}"] = float(value)
    return scores


def per_sample_mean_rate(directory: Path) -> float | None:
    """The rate as the study averaged it (`np.mean(bpp)`): the mean over samples of each sample's
    payload bits over its own pixels (images) or over its own audio samples of every channel
    (audio, as `audio.numel()` counts them), read from each sample's KEY.json. The manifest's
    rate pools instead: all payload bits over all pixels or samples; the two differ where sample
    sizes vary. None for a build with no samples."""
    manifest = load_manifest(directory)
    ratios = []
    for meta in sample_records(directory, manifest):
        if manifest["modality"] == "image":
            size = meta["height"] * meta["width"]
        else:
            size = meta["num_frames"] * meta["channels"]
        ratios.append(meta["payload_bits"] / size)
    return sum(ratios) / len(ratios) if ratios else None


def sample_records(directory: Path, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each sample's KEY.json record, in source order (shard by shard), checked as the loader checks it."""
    from . import record
    from .shards.mapped import MappedShard

    extension = manifest["codec"]["extension"]
    for shard_info in manifest["shards"]:
        with MappedShard(Path(directory) / shard_info["path"], shard_info["path"]) as shard:
            for entry in shard.entries:
                yield record.read(shard, entry, extension).meta


def first_samples_summaries(directory: Path, first: int) -> dict[str, dict[str, Any]]:
    """The manifest's metric summaries (mean, count, and db_of_mean where the metric declares
    it) recomputed over the build's first `first` samples in source order, from the values
    stored in each KEY.json: the study's quality subsets (Common Voice's validation[:100])."""
    from . import metrics

    values: dict[str, list[float]] = {}
    for meta in itertools.islice(sample_records(directory, load_manifest(directory)), first):
        for name, value in (meta.get("metrics") or {}).items():
            if value is not None and math.isfinite(value):
                values.setdefault(name, []).append(float(value))
    summaries = {}
    for name, found in values.items():
        mean = sum(found) / len(found)
        summaries[name] = {"mean": mean, "count": len(found)} | metrics.summaries(name, mean)
    return summaries


def build_facts(directory: Path) -> dict[str, Any]:
    """What a report needs of one build, read once: dataset, codec and params, the rate (bpp for
    images, bits per audio sample of every channel for audio; kbps beside it), mean bits per
    sample, quality means, and its evals."""
    manifest = load_manifest(directory)
    bits = manifest["bits"]
    facts = {
        "build": str(directory),
        "name": Path(directory).name,
        "dataset": manifest["dataset"]["name"],
        "split": manifest["dataset"].get("split"),
        "dataset_options": manifest["dataset"].get("options") or {},
        "codec": manifest["codec"]["name"],
        "params": manifest["codec"]["params"],
        "lossless": bool(manifest["codec"].get("lossless")),
        "modality": manifest["modality"],
        "rate": bits["bpp"] if manifest["modality"] == "image" else bits["bits_per_audio_sample"],
        "kbps": bits.get("kbps"),
        "bits_per_sample": bits["per_sample_mean"],
        "quality": {
            name: summary["mean"]
            for name, summary in (manifest.get("metrics") or {}).items()
            if summary.get("mean") is not None
        },
        "evals": [],
    }
    for path in sorted(Path(directory).glob("eval-*.json")):
        result = json.loads(path.read_text())
        facts["evals"].append(
            {
                "task": result["task"],
                "model": result.get("model"),
                "scores": eval_scores(result),
                "partial": bool(result.get("limit")),
                "evaluated": result.get("num_evaluated"),
                "samples": result.get("num_samples"),
            }
        )
    return facts


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(float(value), float(wanted), rel_tol=1e-6)
    return value == wanted


def match_run(facts: dict[str, Any], study: dict[str, Any], task: str | None = None) -> tuple[str, str] | None:
    """(set name, codec key or "baseline") of the study run this build reproduces (for `task`,
    when given), or None."""
    for set_name, entry in study["sets"].items():
        if facts["dataset"] not in entry["match"] or (task is not None and entry["task"] != task):
            continue
        if entry.get("split") is not None and facts.get("split") != entry["split"]:
            continue
        options = facts.get("dataset_options") or {}
        if any(options.get(k) != v for k, v in (entry.get("options") or {}).items()):
            continue
        if facts["lossless"]:
            return set_name, "baseline"
        for codec_key, codec in entry["codecs"].items():
            wanted = dict(codec["lossyds"])
            if wanted.pop("codec") == facts["codec"] and all(
                _same(facts["params"].get(k), v) for k, v in wanted.items()
            ):
                return set_name, codec_key
    return None


def study_model(entry: dict[str, Any], model: str | None) -> tuple[str, bool]:
    """(the study's model to compare with, whether it is the model the eval ran): the eval's
    `hf:ID`, `demucs:NAME` or a folder ending in the study's model id; otherwise the model the
    study's figure used."""
    ran = (model or "").split(":", 1)[-1].rstrip("/")
    for name in entry["models"]:
        if ran == name or ran.endswith("/" + name) or ran.endswith("--" + name.replace("/", "--")):
            return name, True
    return entry.get("figure_model") or next(iter(entry["models"])), False


def published_rate_in_bits(entry: dict[str, Any], codec_key: str) -> float | None:
    """The study's rate for a codec in bits (its `rates_as_published` times the codec's
    `published_rate_scale`, 8 where the study counted bytes), or None."""
    rate = entry["rates_as_published"].get(codec_key)
    scale = (entry["codecs"].get(codec_key) or {}).get("published_rate_scale", 1)
    return None if rate is None else rate * scale


def measured_score(scores: dict[str, float], score: str) -> tuple[float | None, str | None]:
    """(value, the lossyds score it was read from) for the study's score name."""
    for name in SCORE_SOURCES.get(score, (score,)):
        if name in scores and math.isfinite(scores[name]):
            return scores[name], name
    return None, None


def published_vs_measured(all_facts: list[dict[str, Any]], study: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per evaluated build that reproduces a study run: published and measured score
    and rate, with notes where the model, the scoring or the bit counting differ."""
    rows = []
    for facts in all_facts:
        for result in facts["evals"]:
            found = match_run(facts, study, result["task"])
            if found is None:
                continue
            set_name, run = found
            entry = study["sets"][set_name]
            model, same_model = study_model(entry, result["model"])
            numbers = entry["models"][model]
            published = numbers["baseline"] if run == "baseline" else numbers["runs"].get(run)
            value, read_from = measured_score(result["scores"], entry["score"])
            notes = []
            if not same_model:
                notes.append(f"measured with {result['model']}; the study's {model}")
            if read_from is not None and read_from != entry["score"]:
                notes.append(f"measured as {read_from} (the study's {entry['score']} is not in this eval)")
            if result["partial"]:
                notes.append(f"{result['evaluated']} of {result['samples']} samples (--limit)")
            if entry.get("samples") is not None and result["evaluated"] != entry["samples"]:
                notes.append(f"{result['evaluated']} samples scored; the study scored {entry['samples']}")
            if entry.get("note"):
                notes.append(entry["note"])
            codec_note = (entry["codecs"].get(run) or {}).get("note")
            if codec_note:
                notes.append(codec_note)
            rows.append(
                {
                    "set": set_name,
                    "run": run,
                    "build": facts["name"],
                    "model": model,
                    "published": published,
                    "measured": value,
                    "difference": None if value is None or published is None else value - published,
                    "rate_published": None if run == "baseline" else entry["rates_as_published"].get(run),
                    "rate_measured": facts["rate"],
                    "rate_unit": entry.get("rate_unit"),
                    "notes": notes,
                }
            )
    return rows


def plotted_score(value: float | None, figure: dict[str, Any]) -> float | None:
    """A score as the study's figure plots it: itself, or 1 - score (`plot: one-minus`, WER)."""
    if value is None:
        return None
    return 1 - value if figure.get("plot") == "one-minus" else value


def table_number(value: float | None) -> str:
    """A table cell: four decimals, or empty for a number that is absent."""
    return "" if value is None else f"{value:.4f}"


def comparison_markdown(rows: list[dict[str, Any]], study: dict[str, Any]) -> str:
    """The published-vs-measured table as markdown."""
    if not rows:
        return (
            f"No build here reproduces a run of {study.get('study', 'the study')} with an evaluation of its task "
            "(match: dataset name, codec and setting, as in the study file's runs)."
        )

    lines = [
        f"Published: {study.get('study', '')} ({study.get('source', '')}). Rates as each side counts them.",
        "",
        "| set | run | build | study model | published | measured | measured - published | rate published | rate measured | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['run']} | {r['build']} | {r['model']} | {table_number(r['published'])} | "
            f"{table_number(r['measured'])} | {table_number(r['difference'])} | {table_number(r['rate_published'])} | "
            f"{table_number(r['rate_measured'])} | {'; '.join(r['notes'])} |"
        )
    return "\n".join(lines)


def builds_markdown(all_facts: list[dict[str, Any]]) -> str:
    """One line per build: dataset, codec, setting, rate and its task scores."""
    from .codecs.base import describe_setting

    lines = [
        "| build | dataset | codec | setting | rate | task | model | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for facts in sorted(all_facts, key=lambda f: (f["dataset"], f["codec"], f["rate"])):
        unit = "bpp" if facts["modality"] == "image" else "bits/audio sample"
        evals = facts["evals"] or [None]
        for result in evals:
            score = ""
            if result is not None:
                name = TASK_SCORE[result["task"]]
                value = result["scores"].get(name)
                score = "" if value is None else f"{name} {value:.4f}" + (" (partial)" if result["partial"] else "")
            lines.append(
                f"| {facts['name']} | {facts['dataset']} | {facts['codec']} | {describe_setting(facts['params'])} | "
                f"{facts['rate']:.4f} {unit} | {'' if result is None else result['task']} | "
                f"{'' if result is None else result['model']} | {score} |"
            )
    return "\n".join(lines)
