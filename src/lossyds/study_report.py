"""The reference study's figure and its published numbers beside measured runs
(`lossyds report DIR... --layout study [--published mpq-2024|FILE]`).

The figure is laid out as the study's (arXiv 2401.07957, results_summary.ipynb): one panel per
dataset, the task score against the rate (bits per pixel, or bits per audio sample of every
channel), one point per lossy build labelled with its codec, and the lossless build's score as a
dashed reference line. With a study file the published points and baseline are drawn in grey
beside them. A second figure puts each dataset's quality metrics against the same rate.

A study file (YAML, see `studies/mpq-2024.yaml`) lists, per set: the manifest dataset names it
matches, the task and score, each model's baseline and per-codec scores, the lossyds codec
settings that reproduce each codec, and the rates as the study reported them.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UsageError
from .manifest import load_manifest

STUDIES = {"mpq-2024": "mpq-2024.yaml"}

# The score each task is plotted by when no study file names one.
TASK_SCORE = {"classification": "top1", "segmentation": "miou", "asr": "wer", "separation": "sdr"}

# What a study's score is read from in an eval-TASK.json, in order: the study's own scoring
# first, then the nearest lossyds score (said in the table when a fallback is used).
SCORE_SOURCES: dict[str, tuple[str, ...]] = {
    "top1": ("top1",),
    "miou": ("miou",),
    "wer_raw": ("wer_raw", "wer"),
    "wer": ("wer",),
    "bsseval_sdr_mean_over_frames": ("bsseval_sdr_mean_over_frames", "bsseval_sdr", "sdr"),
    "sdr": ("sdr",),
}


def load_study(spec: str | Path) -> dict[str, Any]:
    """A study's published numbers: a name lossyds ships (`mpq-2024`) or a YAML file's path."""
    import yaml

    if str(spec) in STUDIES:
        text = resources.files("lossyds").joinpath("studies", STUDIES[str(spec)]).read_text()
        where = f"lossyds's {spec}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"--published {spec}: neither a study lossyds ships ({', '.join(STUDIES)}) nor a file.")
        text, where = path.read_text(), str(path)
    try:
        study = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where} is not valid YAML: {exc}") from None
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
        raise UsageError(f"{where} lists no sets.")
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


def comparison_markdown(rows: list[dict[str, Any]], study: dict[str, Any]) -> str:
    """The published-vs-measured table as markdown."""
    if not rows:
        return (
            f"No build here reproduces a run of {study.get('study', 'the study')} with an evaluation of its task "
            "(match: dataset name, codec and setting, as in manifests/mpq-2024.yaml)."
        )

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    lines = [
        f"Published: {study.get('study', '')} ({study.get('source', '')}). Rates as each side counts them.",
        "",
        "| set | run | build | study model | published | measured | measured - published | rate published | rate measured | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['run']} | {r['build']} | {r['model']} | {number(r['published'])} | "
            f"{number(r['measured'])} | {number(r['difference'])} | {number(r['rate_published'])} | "
            f"{number(r['rate_measured'])} | {'; '.join(r['notes'])} |"
        )
    return "\n".join(lines)


def _panel_score(
    builds: list[dict[str, Any]], entry: dict[str, Any] | None
) -> tuple[str | None, str | None, str | None]:
    """(task, score name, axis label) of one dataset's panel."""
    tasks = [e["task"] for b in builds for e in b["evals"]]
    if entry is not None and entry["task"] in tasks:
        return entry["task"], entry["score"], entry.get("score_label", entry["score"])
    if not tasks:
        return None, None, None
    task = tasks[0]
    return task, TASK_SCORE[task], TASK_SCORE[task]


def _panel_grid(count: int, columns: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A matplotlib figure of `count` panels, at most `columns` a row, each `size` inches:
    (figure, its axes in reading order); the grid's spare axes hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat[:count])


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _rate_label(modality: str) -> str:
    return "bits per pixel" if modality == "image" else "bits per audio sample"


def draw_study_figures(
    all_facts: list[dict[str, Any]], out: Path, study: dict[str, Any] | None = None
) -> tuple[list[Path], list[dict[str, Any]]]:
    """report.png: per dataset, its task score against rate, one point per lossy build, the
    lossless build as a dashed line (published points in grey when a study is given);
    report-quality.png: per dataset and quality metric, the metric against rate.
    Returns the paths written and, per panel of report.png, the numbers it draws."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for facts in all_facts:  # a panel per dataset and split
        label = facts["dataset"] if facts["split"] in (None, "") else f"{facts['dataset']} ({facts['split']})"
        by_dataset.setdefault(label, []).append(facts)

    def entry_of(builds: list[dict[str, Any]]) -> dict[str, Any] | None:
        for task in sorted({e["task"] for b in builds for e in b["evals"]}):
            found = match_run(builds[0], study, task) if study else None
            if found is not None:
                return study["sets"][found[0]]
        return None

    panels = []
    for dataset, builds in by_dataset.items():
        entry = entry_of(builds)
        task, score, label = _panel_score(builds, entry)
        if task is not None:
            panels.append((dataset, builds, entry, task, score, label))
    paths: list[Path] = []
    drawn_panels: list[dict[str, Any]] = []
    if panels:
        figure, axes = _panel_grid(len(panels), columns=3, size=(4.3, 3.6))
        markers = "os^Dpv*xP"
        for axis, (dataset, builds, entry, task, score, label) in zip(axes, panels):
            lossy = []
            baseline = None
            for facts in builds:
                for result in facts["evals"]:
                    if result["task"] != task:
                        continue
                    value, _ = measured_score(result["scores"], score)
                    if value is None:
                        continue
                    if facts["lossless"]:
                        baseline = value
                    else:
                        lossy.append((facts["rate"], value, facts["codec"]))
            panel: dict[str, Any] = {
                "title": (entry or {}).get("title", dataset),
                "task": task,
                "score": score,
                "points": [{"codec": c, "rate": r, "value": v} for r, v, c in lossy],
                "baseline": baseline,
                "published": None,
            }
            drawn_panels.append(panel)
            codecs = sorted({c for _, _, c in lossy})
            for rate, value, codec in lossy:
                axis.scatter(rate, value, marker=markers[codecs.index(codec) % len(markers)], zorder=3)
                axis.annotate(
                    codec, (rate, value), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8
                )
            if baseline is not None:
                axis.axhline(baseline, ls="--", c="black", lw=1)
                axis.annotate(
                    "No additional compression",
                    (0.5, baseline),
                    xycoords=("axes fraction", "data"),
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                    fontsize=8,
                )
            if entry is not None and entry["task"] == task:
                ran = next((e["model"] for b in builds for e in b["evals"] if e["task"] == task), None)
                model, _ = study_model(entry, ran)  # the published model the evals ran, else the study's figure's
                numbers = entry["models"][model]
                panel["published"] = {"model": model, "baseline": numbers["baseline"], "points": []}
                for codec_key, value in numbers["runs"].items():
                    rate = published_rate_in_bits(entry, codec_key)
                    if rate is not None:
                        panel["published"]["points"].append({"codec": codec_key, "rate": rate, "value": value})
                        axis.scatter(rate, value, marker="o", facecolors="none", edgecolors="grey", zorder=2)
                        axis.annotate(
                            f"{codec_key} (published)",
                            (rate, value),
                            textcoords="offset points",
                            xytext=(0, 5),
                            ha="center",
                            fontsize=7,
                            color="grey",
                        )
                axis.axhline(numbers["baseline"], ls=":", c="grey", lw=1)
            axis.set_xlabel(_rate_label(builds[0]["modality"]))
            axis.set_ylabel(label)
            axis.set_title((entry or {}).get("title", dataset), fontsize=10)
            drawn = [rate for rate, _, _ in lossy]
            if entry is not None and entry["task"] == task:
                drawn += [r for r in map(lambda c: published_rate_in_bits(entry, c), entry["rates_as_published"]) if r]
            axis.set_xlim(0, 1.15 * max(drawn) if drawn else None)
            axis.grid(True, alpha=0.3)
        paths.append(_save(figure, out / "report.png"))

    quality = [
        (dataset, metric, builds)
        for dataset, builds in by_dataset.items()
        for metric in sorted({q for b in builds for q in b["quality"]})
    ]
    if quality:
        figure, axes = _panel_grid(len(quality), columns=4, size=(4, 3.3))
        for axis, (dataset, metric, builds) in zip(axes, quality):
            for facts in builds:
                if metric in facts["quality"] and not facts["lossless"]:
                    axis.scatter(facts["rate"], facts["quality"][metric], zorder=3)
                    axis.annotate(
                        facts["codec"],
                        (facts["rate"], facts["quality"][metric]),
                        textcoords="offset points",
                        xytext=(0, -12),
                        ha="center",
                        fontsize=8,
                    )
            axis.set_xlabel(_rate_label(builds[0]["modality"]))
            axis.set_ylabel(metric)
            axis.set_title(f"{dataset}: {metric}", fontsize=10)
            axis.set_xlim(left=0)
            axis.grid(True, alpha=0.3)
        paths.append(_save(figure, out / "report-quality.png"))
    if not paths:
        raise UsageError(
            "the builds have no eval-*.json results and no --metrics; run `lossyds eval` or build with --metrics first."
        )
    return paths, drawn_panels


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


def make_study_report(directories: list[Path], out: Path, study: dict[str, Any] | None) -> list[Path]:
    """report.png (and report-quality.png), report.md and report.json in the study's layout."""
    all_facts = [build_facts(Path(d)) for d in directories]
    figures, panels = draw_study_figures(all_facts, out, study)
    sections = ["# lossyds report", ""]
    sections += [f"![{p.stem}]({p.name})" for p in figures]
    sections += ["", builds_markdown(all_facts)]
    comparison = published_vs_measured(all_facts, study) if study else []
    if study:
        sections += ["", "## Published vs measured", "", comparison_markdown(comparison, study)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(sections) + "\n")
    (out / "report.json").write_text(
        json.dumps(
            {"layout": "study", "builds": all_facts, "figure": panels, "published_vs_measured": comparison}, indent=2
        )
    )
    return [*figures, out / "report.md", out / "report.json"]
