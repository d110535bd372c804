"""The study layout's figures and the report that holds them
(`lossyds report DIR... --layout study`).

report.png puts each dataset's task score against the rate, one point per lossy build and the
lossless build as a dashed line, with a study's published points and baseline in grey beside
them; report-quality.png puts each dataset's quality metrics against the same rate. The runs'
facts and their matching to a study come from `study_report`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import UsageError
from .plot_style import codec_style
from .study_report import (
    TASK_SCORE,
    build_facts,
    builds_markdown,
    comparison_markdown,
    match_run,
    measured_score,
    plotted_score,
    published_rate_in_bits,
    published_vs_measured,
    study_model,
)


def _panel_score(
    builds: list[dict[str, Any]], entry: dict[str, Any] | None
) -> tuple[str | None, str | None, str | None]:
    """(task, score name, axis label) of one dataset's panel."""
    tasks = [e["task"] for b in builds for e in b["evals"]]
    if entry is not None and entry["task"] in tasks:
        label = entry.get("figure", {}).get("y_label") or entry.get("score_label", entry["score"])
        return entry["task"], entry["score"], label
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


def _by_dataset(all_facts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The builds grouped a panel per dataset and split, keyed by the panel's label."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for facts in all_facts:
        label = facts["dataset"] if facts["split"] in (None, "") else f"{facts['dataset']} ({facts['split']})"
        by_dataset.setdefault(label, []).append(facts)
    return by_dataset


def _study_entry(builds: list[dict[str, Any]], study: dict[str, Any] | None) -> dict[str, Any] | None:
    """The study set one dataset's builds match, if any."""
    for task in sorted({e["task"] for b in builds for e in b["evals"]}):
        found = match_run(builds[0], study, task) if study else None
        if found is not None:
            return study["sets"][found[0]]
    return None


def _score_panels(by_dataset: dict[str, list[dict[str, Any]]], study: dict[str, Any] | None) -> list[tuple]:
    """(dataset, builds, entry, task, score, label) per panel of report.png."""
    panels = []
    for dataset, builds in by_dataset.items():
        entry = _study_entry(builds, study)
        task, score, label = _panel_score(builds, entry)
        if task is not None:
            panels.append((dataset, builds, entry, task, score, label))
    return panels


def _measured_points(
    builds: list[dict[str, Any]], task: str, score: str, figure: dict[str, Any]
) -> tuple[list[tuple[float, float, str]], float | None]:
    """(lossy (rate, value, codec) points, lossless baseline) of one panel, each value as the
    study's figure plots it (1 - WER where it says so)."""
    lossy = []
    baseline = None
    for facts in builds:
        for result in facts["evals"]:
            if result["task"] != task:
                continue
            value = plotted_score(measured_score(result["scores"], score)[0], figure)
            if value is None:
                continue
            if facts["lossless"]:
                baseline = value
            else:
                lossy.append((facts["rate"], value, facts["codec"]))
    return lossy, baseline


def _draw_measured(axis: Any, lossy: list[tuple[float, float, str]], baseline: float | None) -> None:
    for rate, value, codec in lossy:
        style = codec_style(codec)  # one colour and marker per codec in every panel and figure
        axis.scatter(rate, value, marker=style.marker, color=style.color, zorder=3)
        axis.annotate(codec, (rate, value), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8)
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


def _draw_published(axis: Any, entry: dict[str, Any], builds: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """The study's published points and baseline in grey; returns the numbers drawn."""
    ran = next((e["model"] for b in builds for e in b["evals"] if e["task"] == task), None)
    model, _ = study_model(entry, ran)  # the published model the evals ran, else the study's figure's
    numbers = entry["models"][model]
    figure = entry.get("figure", {})
    baseline = plotted_score(numbers["baseline"], figure)
    published: dict[str, Any] = {"model": model, "baseline": baseline, "points": []}
    for codec_key, score in numbers["runs"].items():
        rate = published_rate_in_bits(entry, codec_key)
        value = plotted_score(score, figure)
        if rate is not None:
            published["points"].append({"codec": codec_key, "rate": rate, "value": value})
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
    axis.axhline(baseline, ls=":", c="grey", lw=1)
    return published


def _finish_axis(axis: Any, panel: tuple, lossy: list[tuple[float, float, str]], published: bool) -> None:
    """Labels, title, rate range and grid of one report.png panel."""
    dataset, builds, entry, _, _, label = panel
    axis.set_xlabel(_rate_label(builds[0]["modality"]))
    axis.set_ylabel(label)
    axis.set_title((entry or {}).get("title", dataset), fontsize=10)
    drawn = [rate for rate, _, _ in lossy]
    if published:
        drawn += [r for r in map(lambda c: published_rate_in_bits(entry, c), entry["rates_as_published"]) if r]
    axis.set_xlim(0, 1.15 * max(drawn) if drawn else None)
    axis.grid(True, alpha=0.3)


def _draw_panel(axis: Any, panel: tuple) -> dict[str, Any]:
    """One dataset's report.png panel; returns the numbers it draws."""
    dataset, builds, entry, task, score, _ = panel
    figure = entry.get("figure", {}) if entry is not None and entry["task"] == task else {}
    lossy, baseline = _measured_points(builds, task, score, figure)
    drawn: dict[str, Any] = {
        "title": (entry or {}).get("title", dataset),
        "task": task,
        "score": score,
        "points": [{"codec": c, "rate": r, "value": v} for r, v, c in lossy],
        "baseline": baseline,
        "published": None,
    }
    _draw_measured(axis, lossy, baseline)
    published = entry is not None and entry["task"] == task
    if published:
        drawn["published"] = _draw_published(axis, entry, builds, task)
    _finish_axis(axis, panel, lossy, published)
    return drawn


def _draw_quality(by_dataset: dict[str, list[dict[str, Any]]], out: Path) -> Path | None:
    """report-quality.png: per dataset and quality metric, the metric against rate."""
    quality = [
        (dataset, metric, builds)
        for dataset, builds in by_dataset.items()
        for metric in sorted({q for b in builds for q in b["quality"]})
    ]
    if not quality:
        return None
    figure, axes = _panel_grid(len(quality), columns=4, size=(4, 3.3))
    for axis, (dataset, metric, builds) in zip(axes, quality):
        for facts in builds:
            if metric in facts["quality"] and not facts["lossless"]:
                style = codec_style(facts["codec"])
                axis.scatter(facts["rate"], facts["quality"][metric], marker=style.marker, color=style.color, zorder=3)
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
    return _save(figure, out / "report-quality.png")


def draw_study_figures(
    all_facts: list[dict[str, Any]], out: Path, study: dict[str, Any] | None = None
) -> tuple[list[Path], list[dict[str, Any]]]:
    """report.png: per dataset, its task score against rate, one point per lossy build, the
    lossless build as a dashed line (published points in grey when a study is given);
    report-quality.png: per dataset and quality metric, the metric against rate.
    Returns the paths written and, per panel of report.png, the numbers it draws."""
    by_dataset = _by_dataset(all_facts)
    panels = _score_panels(by_dataset, study)
    paths: list[Path] = []
    drawn_panels: list[dict[str, Any]] = []
    if panels:
        figure, axes = _panel_grid(len(panels), columns=3, size=(4.3, 3.6))
        drawn_panels = [_draw_panel(axis, panel) for axis, panel in zip(axes, panels)]
        paths.append(_save(figure, out / "report.png"))
    quality = _draw_quality(by_dataset, out)
    if quality is not None:
        paths.append(quality)
    if not paths:
        raise UsageError(
            "the builds have no eval-*.json results and no --metrics; run `lossyds eval` or build with --metrics first."
        )
    return paths, drawn_panels


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


# How each of the three series of a study's figure is drawn: the study's own numbers in grey,
# lossyds's run as the study ran it hollow, and the corrected run filled, each in its codec's style.
SERIES = {
    "published": {"label": "published", "filled": True, "grey": True},
    "as-published": {"label": "lossyds as published", "filled": False, "grey": False},
    "corrected": {"label": "lossyds corrected", "filled": True, "grey": False},
}


def _draw_series(axis: Any, series: str, drawn: dict[str, Any], offset: int) -> None:
    way = SERIES[series]
    for point in drawn["points"]:
        if point["rate"] is None:
            continue
        style = codec_style(point["codec"].lower())
        color = "grey" if way["grey"] else style.color
        face = color if way["filled"] else "none"
        axis.scatter(point["rate"], point["value"], marker=style.marker, facecolors=face, edgecolors=color, zorder=3)
        text = point["codec"] if series == "published" else f"{point['codec']} ({way['label'][8:]})"
        axis.annotate(text, (point["rate"], point["value"]), textcoords="offset points", xytext=(0, offset),
                      ha="center", fontsize=6 if series != "published" else 7, color=color)  # fmt: skip
        if "rate_as_published" in point:  # where the study drew it: its bytes taken for bits
            axis.scatter(point["rate_as_published"], point["value"], marker="x", color="grey", zorder=2)
            axis.annotate("", (point["rate"], point["value"]), (point["rate_as_published"], point["value"]),
                          arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8})  # fmt: skip
            axis.annotate(f"{point['codec']} as published", (point["rate_as_published"], point["value"]),
                          textcoords="offset points", xytext=(0, 6), ha="left", fontsize=6, color="grey")  # fmt: skip


def draw_as_published_figure(panels: list[dict[str, Any]], path: Path) -> Path:
    """report.png of `report --spec`: the study's figure, a panel per dataset in its order, with
    its titles, axis labels and limits (panels from study_spec_report.figure_panels): the
    published points and baseline (dashed, black, as the study drew it), and lossyds's points of
    both variants (its corrected baseline dotted)."""
    figure, axes = _panel_grid(len(panels), columns=3, size=(4.6, 3.9))
    for axis, panel in zip(axes, panels):
        for series, offset in (("published", -12), ("as-published", 6), ("corrected", 12)):
            _draw_series(axis, series, panel[series], offset)
        if panel["published"]["baseline"] is not None:
            axis.axhline(panel["published"]["baseline"], ls="--", c="black", lw=1)
            axis.annotate("No Additional Compression", (0.5, panel["published"]["baseline"]),
                          xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 4),
                          ha="center", fontsize=7)  # fmt: skip
        if panel["corrected"]["baseline"] is not None:
            axis.axhline(panel["corrected"]["baseline"], ls=":", c="tab:blue", lw=1)
        axis.set_xlim(panel["xlim"])
        axis.set_ylim(panel["ylim"])
        axis.set_xlabel(panel["x_label"])
        axis.set_ylabel(panel["y_label"])
        axis.set_title(panel["title"], fontsize=9)
        axis.grid(True, alpha=0.3)
    _series_legend(axes[0])
    return _save(figure, path)


def _series_legend(axis: Any) -> None:
    """Which series is which: the study's numbers grey, lossyds's as published hollow, corrected filled."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", color="grey", label="published"),
        Line2D(
            [], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="black", label="lossyds as published"
        ),
        Line2D([], [], ls="", marker="o", color="black", label="lossyds corrected"),
    ]
    axis.legend(handles=handles, fontsize=6, loc="lower left")


def draw_quality_vs_score(found: list[dict[str, Any]], path: Path) -> Path:
    """report-quality.png: per dataset and quality metric, each lossy corrected run's mean metric
    against its task score, titled with the Pearson and Spearman correlations across codecs
    (`found`: study_spec_report.correlations)."""
    if not found:
        raise UsageError("the study names no quality metrics (`metrics:` of its evaluations); nothing to plot.")
    figure, axes = _panel_grid(len(found), columns=4, size=(3.8, 3.2))
    for axis, item in zip(axes, found):
        for (x, y), codec in zip(item["points"], item["codecs"]):
            axis.scatter(x, y, color="tab:blue", zorder=3)
            axis.annotate(codec, (x, y), textcoords="offset points", xytext=(0, -11), ha="center", fontsize=7)
        pearson = "n/a" if item["pearson"] is None else f"{item['pearson']:.2f}"
        spearman = "n/a" if item["spearman"] is None else f"{item['spearman']:.2f}"
        axis.set_title(f"{item['evaluation']}: r={pearson}, rho={spearman}", fontsize=8)
        axis.set_xlabel(f"{item['metric']} (per run, as the study reports it)")
        axis.set_ylabel(item["score"])
        axis.grid(True, alpha=0.3)
    return _save(figure, path)
