"""`lossyds report DIR... --out OUT`: rate-vs-metric plots (PNG), a markdown table, and correlations.

Each build contributes one point per metric: x is its achieved rate (bpp for images, kbps
for audio: payload bits, as in the manifest), y a task score from its eval-*.json or a mean
quality metric from its manifest. One curve per codec. Correlations (Pearson, Spearman)
between each quality metric and each task score are computed across builds.

Per sample too, where builds have both: each sample's quality metrics (its KEY.json, from
`build --metrics`) against its own task outcome (the `samples` of eval-TASK.json: top-1
correct 0/1, the utterance's WER, pixel accuracy, mean SDR over stems), joined on the
key; Spearman within each build and over all builds' samples pooled (does the metric
predict which samples the machine fails on, across codecs and rates?).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .codecs.base import describe_setting
from .errors import UsageError
from .eval import tasks as eval_tasks
from .manifest import load_manifest
from .metrics import find as find_metric
from .plot_style import codec_style, format_score, lossless_reference, readable_log_axis

# The scores that get a panel: each task declares which of its scores are plotted.
TASK_SCORES = tuple(score.name for declared in eval_tasks() for score in declared.scores if score.plotted)


def sample_outcomes(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """key -> {outcome name: value} from one eval-TASK.json's per-sample entries, as its task
    declares its per-sample outcome (every task's is tried for a result that names none)."""
    declared = [task for task in eval_tasks() if task.name == result.get("task")] or eval_tasks()
    out: dict[str, dict[str, float]] = {}
    for sample in result.get("samples") or []:
        for task in declared:
            value = task.outcome.measure(sample)
            if value is not None:
                out[sample["key"]] = {task.outcome.name: float(value)}
                break
    return out


def panel_label(name: str, modality: str) -> str:
    """A panel's axis label: the score or metric with its unit and direction, where declared."""
    declared = [score for task in eval_tasks() for score in task.scores if score.name == name]
    declared += [task.outcome for task in eval_tasks() if task.outcome.name == name]
    metric = find_metric(name, modality)
    if declared:
        return f"{name} ({declared[0].unit}, {'higher' if declared[0].higher_is_better else 'lower'} is better)"
    if metric is not None:
        return f"{name} ({metric.unit}, {metric.direction})"
    return name


def sample_metrics(directory: Path) -> dict[str, dict[str, float]]:
    """key -> the quality metrics stored in its KEY.json (empty when built without --metrics).
    Reads only the JSON members, through the same shard reader and checks as the loader."""
    from . import record
    from .shards.mapped import MappedShard

    manifest = load_manifest(directory)
    if not manifest.get("metrics"):
        return {}
    extension = manifest["codec"]["extension"]
    found: dict[str, dict[str, float]] = {}
    for shard_info in manifest["shards"]:
        with MappedShard(Path(directory) / shard_info["path"], shard_info["path"]) as shard:
            for entry in shard.entries:
                meta = record.read(shard, entry, extension).meta
                values = {
                    k: float(v)
                    for k, v in (meta.get("metrics") or {}).items()
                    if isinstance(v, (int, float)) and math.isfinite(v)
                }
                if values:
                    found[entry.key] = values
    return found


def per_sample_pairs(directory: Path) -> list[tuple[str, str, float, float]]:
    """(quality metric, outcome, metric value, outcome value) for every sample of one build
    that has both."""
    metrics = sample_metrics(directory)
    if not metrics:
        return []
    pairs = []
    for path in sorted(Path(directory).glob("eval-*.json")):
        for key, outcomes in sample_outcomes(json.loads(path.read_text())).items():
            for metric, value in metrics.get(key, {}).items():
                for outcome, result in outcomes.items():
                    if math.isfinite(result):
                        pairs.append((metric, outcome, value, result))
    return pairs


def per_sample_correlations(directories: list[Path]) -> list[dict[str, Any]]:
    """Spearman between each per-sample quality metric and each per-sample task outcome:
    within each build, and over all builds' samples pooled ("all")."""
    from scipy import stats

    by_build = {str(d): per_sample_pairs(d) for d in directories}
    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for build, pairs in by_build.items():
        for metric, outcome, x, y in pairs:
            groups.setdefault((build, metric, outcome), []).append((x, y))
            groups.setdefault(("all", metric, outcome), []).append((x, y))
    out = []
    for (build, metric, outcome), pairs in sorted(groups.items()):
        if len(pairs) >= 3 and len({x for x, _ in pairs}) > 1 and len({y for _, y in pairs}) > 1:
            xs, ys = zip(*pairs)
            out.append(
                {
                    "build": build,
                    "quality_metric": metric,
                    "outcome": outcome,
                    "samples": len(pairs),
                    "spearman": float(stats.spearmanr(xs, ys)[0]),
                }
            )
    return out


def collect(facts: dict[str, Any]) -> dict[str, Any]:
    """One build's row of the metrics layout, from `study_report.build_facts`: its rate in bpp
    (images) or kbps (audio), task scores, quality means, and notes on --limit evaluations."""
    row: dict[str, Any] = {
        "build": facts["build"],
        "codec": facts["codec"],
        "setting": describe_setting(facts["params"]),
        "modality": facts["modality"],
        "rate": facts["rate"] if facts["modality"] == "image" else facts["kbps"],
        "bits_per_sample": facts["bits_per_sample"],
        "scores": {},
        "quality": dict(facts["quality"]),
        "partial": [],  # notes on evaluations scored with --limit
        "lossless": facts["lossless"],
    }
    for result in facts["evals"]:
        row["scores"].update({name: result["scores"][name] for name in TASK_SCORES if name in result["scores"]})
        if result["partial"]:  # scored with --limit: said beside the table
            row["partial"].append(
                f"{result['task']} scored {result['evaluated']} of {result['samples']} samples (--limit)"
            )
    return row


def correlations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from scipy import stats

    out = []
    quality_names = sorted({q for r in rows for q in r["quality"]})
    score_names = sorted({s for r in rows for s in r["scores"]})
    for quality in quality_names:
        for score in score_names:
            pairs = [
                (r["quality"][quality], r["scores"][score])
                for r in rows
                if quality in r["quality"] and score in r["scores"]
            ]
            pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
            if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
                xs, ys = zip(*pairs)
                out.append(
                    {
                        "quality_metric": quality,
                        "task_metric": score,
                        "builds": len(pairs),
                        "pearson": float(stats.pearsonr(xs, ys)[0]),
                        "spearman": float(stats.spearmanr(xs, ys)[0]),
                    }
                )
    return out


def draw(rows: list[dict[str, Any]], panels: list[str], modality: str) -> Any:
    """The report figure: one panel per score or quality metric, one curve per lossy codec
    against the rate (each codec in its plot_style colour and marker in every panel), and
    each lossless build as a labelled reference line. Returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = "bits per pixel (payload)" if modality == "image" else "kbps (payload)"
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    lossy = [r for r in rows if not r.get("lossless")]
    for axis, panel in zip(axes[0], panels):
        for codec in sorted({r["codec"] for r in lossy}):
            points = sorted(
                (r["rate"], (r["scores"] | r["quality"])[panel])
                for r in lossy
                if r["codec"] == codec and panel in (r["scores"] | r["quality"])
            )
            if points:
                style = codec_style(codec)
                axis.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker=style.marker,
                    color=style.color,
                    label=codec,
                )
        for r in rows:
            if r.get("lossless"):
                _lossless_line(axis, r, panel)
        rates = [r["rate"] for r in lossy if r["rate"] > 0]
        if rates and max(rates) / min(rates) > 10:
            axis.set_xscale("log")
            readable_log_axis(axis)
        axis.set_xlabel(unit)
        axis.set_ylabel(panel_label(panel, modality))
        axis.set_title(panel)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _lossless_line(axis: Any, row: dict[str, Any], panel: str) -> None:
    """A lossless build in one panel: its score as a reference line, or, for a metric that is
    infinite on identical samples (PSNR), a legend entry saying so."""
    value = (row["scores"] | row["quality"]).get(panel)
    label = f"{row['codec']} (lossless, {row['rate']:.3g} {'bpp' if row['modality'] == 'image' else 'kbps'})"
    if value is not None and math.isfinite(value):
        lossless_reference(axis, value, label)
    elif panel in row.get("lossless_metrics", ()):
        lossless_reference(axis, None, label)


def plot(rows: list[dict[str, Any]], panels: list[str], modality: str, png: Path) -> Path:
    """report.png: the `draw` figure saved."""
    import matplotlib.pyplot as plt

    figure = draw(rows, panels, modality)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png


def builds_table(rows: list[dict[str, Any]], columns: list[str], modality: str) -> str:
    """The markdown table of builds: rate, bits per sample and every column, then the --limit notes."""
    header = ["build", "codec", "setting", "bpp" if modality == "image" else "kbps", "bits/sample", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(rows, key=lambda r: (r["codec"], r["rate"])):
        values = [(r["scores"] | r["quality"]).get(c) for c in columns]
        cells = [Path(r["build"]).name, r["codec"], r["setting"], f"{r['rate']:.4f}", f"{r['bits_per_sample']:.0f}"]
        cells += [
            "lossless" if v is None and c in r.get("lossless_metrics", ()) else format_score(v)
            for c, v in zip(columns, values)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    partial = [f"{Path(r['build']).name}: {note}" for r in rows for note in r["partial"]]
    if partial:
        table += "\n\nPartial evaluations: " + "; ".join(partial) + "."
    return table


def correlation_tables(found: list[dict[str, Any]], per_sample: list[dict[str, Any]]) -> str:
    """The markdown of the correlations across builds and per sample (empty where there are none)."""
    table = ""
    if found:
        table += (
            "\n\n| quality metric | task metric | builds | Pearson | Spearman |\n|---|---|---|---|---|\n"
            + "\n".join(
                f"| {c['quality_metric']} | {c['task_metric']} | {c['builds']} | {c['pearson']:.3f} | {c['spearman']:.3f} |"
                for c in found
            )
        )
    if per_sample:
        table += (
            "\n\nPer sample (each sample's quality metric against its own task outcome):\n\n| builds | quality metric | outcome | samples | Spearman |\n|---|---|---|---|---|\n"
            + "\n".join(
                f"| {c['build'] if c['build'] == 'all' else Path(c['build']).name} | {c['quality_metric']} | {c['outcome']} | {c['samples']} | {c['spearman']:.3f} |"
                for c in per_sample
            )
        )
    return table


def lossless_metrics(directory: Path) -> list[str]:
    """A lossless build's quality metrics without a finite mean: infinite on every sample
    (PSNR of identical pixels), shown as "lossless" rather than left out."""
    manifest = load_manifest(directory)
    if not manifest["codec"].get("lossless"):
        return []
    return [name for name, summary in (manifest.get("metrics") or {}).items() if summary.get("mean") is None]


def make_report(
    directories: list[Path],
    out: Path,
    layout: str = "metrics",
    published: str | Path | None = None,
    samples: list[str] | None = None,
    source: Path | None = None,
    page: bool = False,
) -> list[Path]:
    """Write the report of `directories` into `out`. layout "metrics": one panel per score and
    quality metric over builds of one modality; with `page` (as `lossyds report` does) also
    index.html, a gallery of `samples` (keys; None: a few every build holds) decoded from
    every build beside the lossless `source` build (default: a lossless build among
    `directories`). layout "study": the reference study's figure (one panel per dataset,
    `study_report`). published: a study's numbers (`mpq-2024` or a YAML file) set beside the
    measured runs in report.md and report.json."""
    from .report_html import build_view, figures_page, write_page
    from .study_figure import make_study_report
    from .study_report import build_facts, comparison_markdown, load_study, published_vs_measured

    if layout not in ("metrics", "study"):
        raise UsageError(f"unknown report layout {layout!r}; choose metrics or study.")
    study = load_study(published) if published is not None else None
    if layout == "study":
        paths = make_study_report(directories, out, study)
        if page:  # builds of several datasets share no sample: the page holds the figures and tables
            figures = [path.name for path in paths if path.suffix == ".png"]
            paths.append(figures_page(out, figures, (out / "report.md").read_text()))
        return paths
    all_facts = [build_facts(Path(d)) for d in directories]
    rows = [
        collect(facts) | {"lossless_metrics": lossless_metrics(Path(d))} for facts, d in zip(all_facts, directories)
    ]
    modalities = {r["modality"] for r in rows}
    if len(modalities) != 1:
        raise UsageError("report compares builds of one modality at a time (images in bpp, audio in kbps).")
    modality = modalities.pop()
    panels = sorted({s for r in rows for s in r["scores"]}) + sorted({q for r in rows for q in r["quality"]})
    if not panels and not page:  # the page still shows the bits and the decoded samples without a score
        raise UsageError(
            "the builds have no eval-*.json results and no --metrics; run `lossyds eval` or build with --metrics first."
        )
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, panels, modality, out / "report.png") if panels else None
    found = correlations(rows)
    per_sample = per_sample_correlations([Path(d) for d in directories])
    builds_markdown = builds_table(rows, panels, modality)
    table = builds_markdown + correlation_tables(found, per_sample)
    comparison: list[dict[str, Any]] = []
    if study is not None:
        comparison = published_vs_measured(all_facts, study)
        table += "\n\n## Published vs measured\n\n" + comparison_markdown(comparison, study)
    markdown = out / "report.md"
    figure = "![rate vs metrics](report.png)\n\n" if png else ""
    markdown.write_text(f"# lossyds report\n\n{figure}{table}\n")
    (out / "report.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "correlations": found,
                "per_sample_correlations": per_sample,
                "published_vs_measured": comparison,
            },
            indent=2,
        )
    )
    if not page:
        return [png, markdown, out / "report.json"]
    written = [path for path in (png, markdown, out / "report.json") if path is not None]
    index = write_page(
        out,
        [build_view(Path(r["build"]), r["scores"] | r["quality"]) for r in rows],
        keys=samples,
        source=build_view(Path(source)) if source is not None else None,
        figures=[png.name] if png else [],
        tables_markdown=table[len(builds_markdown) :],  # the builds table is the page's own, in gallery order
    )
    return [*written, index]
