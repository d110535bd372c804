"""`lossyds report --spec NAME --builds OUT --out REPORT`: a study's report from the folder its
three commands wrote.

For every run of the study file and both of its variants (builder/study_runs.py) it reads the
build (OUT/<folder>), its quality means, and each model's result (eval-TASK--MODEL--VARIANT.json,
study_eval.py), then writes:
- report.png: the study's figure as it drew it (study_figure.draw_as_published_figure);
- report-quality.png: each quality metric against the task score, per dataset, with Pearson and
  Spearman correlations across codecs computed from per-run means;
- report.md and report.json: one table per dataset: the published number, lossyds as published,
  lossyds corrected, the three rates, and the causes of the differences in words.

Rates: "as published" is the mean of per-sample ratios (as the study's `np.mean(bpp)`),
"corrected" pools all payload bits over all pixels or audio samples (the manifest's rate);
the published rate is the study's, in bits (times `rate_scale` where it counted bytes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .builder.study_runs import AS_PUBLISHED, CORRECTED, VARIANTS, study_runs
from .manifest import MANIFEST_NAME
from .study_eval import result_name
from .study_report import (
    build_facts,
    eval_scores,
    first_samples_summaries,
    measured_score,
    per_sample_mean_rate,
    plotted_score,
    table_number,
)


def _measured(spec: dict, column: str, variant: Any, entry: dict, builds: Path, cache: dict) -> dict[str, Any] | None:
    """One column (as published or corrected) of one run as measured from `variant`, the build
    and evaluation standing for it (a run without switches stands for both): its rate (the mean
    of per-sample ratios in the as-published column, pooled in the corrected one), quality
    means, each model's score and how many samples it scored; None if not built."""
    folder = builds / variant.folder
    if not (folder / MANIFEST_NAME).is_file():
        return None
    if folder not in cache:
        cache[folder] = build_facts(folder)
    facts = cache[folder]
    if column == AS_PUBLISHED:
        rate = cache.setdefault((folder, "per-sample"), per_sample_mean_rate(folder))
    else:
        rate = facts["rate"]
    scores, evaluated = {}, {}
    for model in entry["models"]:
        path = folder / result_name(entry["task"], model, variant.variant)
        if path.is_file():
            result = json.loads(path.read_text())
            scores[model], _ = measured_score(eval_scores(result), entry["score"])
            evaluated[model] = result.get("num_evaluated")
    return {
        "folder": variant.folder,
        "rate": rate,
        "quality": quality_means(facts, entry.get("quality_samples")),
        "scores": scores,
        "evaluated": evaluated,
    }


def quality_means(facts: dict[str, Any], first: int | None = None) -> dict[str, float]:
    """Each quality metric of a build as the study reported it: -10 log10 of the mean where the
    metric declares it (`db_of_mean`: the study's mse and cdpam-raw), else the mean; over the
    whole build, or over its `first` samples in source order (the study's quality subsets, such
    as Common Voice's validation[:100]), from the values stored in each sample's KEY.json."""
    from .manifest import load_manifest

    summaries = load_manifest(facts["build"]).get("metrics") or {}
    if first is not None:
        summaries = first_samples_summaries(Path(facts["build"]), first)
    found = {}
    for name, summary in summaries.items():
        value = summary.get("db_of_mean", summary.get("mean"))
        if value is not None:
            found[name] = value
    return found


def collect(spec: dict[str, Any], builds: Path) -> dict[str, list[dict[str, Any]]]:
    """evaluation -> its cells, one per run: the published numbers and both variants measured."""
    from .builder.spec_checks import run_is_lossless

    variants: dict[str, dict[str, Any]] = {}
    for variant in study_runs(spec):
        variants.setdefault(variant.name, {})[variant.variant] = variant
    cache: dict = {}
    cells: dict[str, list[dict[str, Any]]] = {}
    for run in spec["runs"]:
        name = run.get("evaluation")
        if name is None:
            continue
        entry = spec["evaluations"][name]
        published = (spec.get("published") or {}).get(run["name"]) or {}
        own = variants[run["name"]]
        cell = {
            "run": run["name"],
            "codec": published.get("as", "baseline") if not run_is_lossless(run) else "baseline",
            "lossless": run_is_lossless(run),
            "published": published,
            "switched": AS_PUBLISHED in own,
            "why": list(own[AS_PUBLISHED].why) if AS_PUBLISHED in own else [],
        }
        for variant_name in VARIANTS:
            variant = own.get(variant_name) or own[CORRECTED]  # without switches, one variant stands for both
            cell[variant_name] = _measured(spec, variant_name, variant, entry, builds, cache)
        cells.setdefault(name, []).append(cell)
    return cells


def published_rate(published: dict[str, Any]) -> float | None:
    """The study's rate in bits (its number times `rate_scale`), None for a baseline."""
    if published.get("rate") is None:
        return None
    return published["rate"] * published.get("rate_scale", 1)


def causes(cell: dict[str, Any], entry: dict[str, Any], model: str) -> list[str]:
    """Why the three numbers of one cell differ, in words."""
    found = [f"as published: {why}" for why in cell["why"]]
    if not cell["switched"]:
        found.append("no study-exact switch applies: the as-published score is the corrected run's")
    note = cell["published"].get("note")
    if note:
        found.append(f"published rate: {note}")
    if not cell["lossless"]:
        found.append("rate as published is the mean of per-sample ratios; corrected pools bits over all samples")
    states = {}
    for variant in VARIANTS:
        measured = cell[variant]
        if measured is None:
            states[variant] = "not built"
        elif measured["evaluated"].get(model) is None:
            states[variant] = f"not evaluated with {model}"
        elif entry.get("samples") is not None and measured["evaluated"][model] != entry["samples"]:
            states[variant] = f"{measured['evaluated'][model]} samples scored; the study scored {entry['samples']}"
    if len(set(states.values())) == 1 and len(states) == len(VARIANTS):
        found.append(next(iter(states.values())))  # the same for both variants: said once
    else:
        found += [f"{variant}: {state}" for variant, state in states.items()]
    return found


def table_rows(entry: dict[str, Any], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model and run: published, as published, corrected (score and rate), causes."""
    rows = []
    for model in entry["models"]:
        for cell in cells:
            measured = {v: cell[v] or {} for v in VARIANTS}
            rows.append(
                {
                    "model": model,
                    "run": cell["run"],
                    "codec": cell["codec"],
                    "published": cell["published"].get("scores", {}).get(model),
                    AS_PUBLISHED: measured[AS_PUBLISHED].get("scores", {}).get(model),
                    CORRECTED: measured[CORRECTED].get("scores", {}).get(model),
                    "rate_published": published_rate(cell["published"]),
                    "rate_as_published": None if cell["lossless"] else measured[AS_PUBLISHED].get("rate"),
                    "rate_corrected": None if cell["lossless"] else measured[CORRECTED].get("rate"),
                    "causes": causes(cell, entry, model),
                }
            )
    return rows


def correlations(spec: dict[str, Any], cells: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per dataset and quality metric: Pearson and Spearman between the metric's per-run mean and
    the task score of the study's figure model, across the lossy corrected runs (codecs)."""
    from scipy import stats

    found = []
    for name, runs in cells.items():
        entry = spec["evaluations"][name]
        model = entry["models"][0]
        names = (entry.get("figure") or {}).get("codec_names") or {}
        lossy = [(c[CORRECTED], names.get(c["codec"], c["codec"])) for c in runs if not c["lossless"] and c[CORRECTED]]
        for metric in entry.get("metrics") or []:
            found_points = [
                (m["quality"][metric], m["scores"][model], codec)
                for m, codec in lossy
                if m["quality"].get(metric) is not None and m["scores"].get(model) is not None
            ]
            found_points = [p for p in found_points if math.isfinite(p[0]) and math.isfinite(p[1])]
            pairs = [(x, y) for x, y, _ in found_points]
            defined = len(pairs) >= 3 and len({x for x, _ in pairs}) > 1 and len({y for _, y in pairs}) > 1
            found.append(
                {
                    "evaluation": name,
                    "metric": metric,
                    "score": entry["score"],
                    "model": model,
                    "runs": len(pairs),
                    "points": [list(p) for p in pairs],
                    "codecs": [codec for _, _, codec in found_points],
                    "pearson": float(stats.pearsonr(*zip(*pairs))[0]) if defined else None,
                    "spearman": float(stats.spearmanr(*zip(*pairs))[0]) if defined else None,
                }
            )
    return found


def _variant_points(runs: list[dict[str, Any]], variant: str, model: str, figure: dict, names: dict) -> dict:
    points, baseline = [], None
    for cell in runs:
        measured = cell[variant]
        value = None if measured is None else plotted_score(measured["scores"].get(model), figure)
        if value is None:
            continue
        if cell["lossless"]:
            baseline = value
        else:
            points.append({"codec": names.get(cell["codec"], cell["codec"]), "rate": measured["rate"], "value": value})
    return {"baseline": baseline, "points": points}


def figure_panels(spec: dict[str, Any], cells: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """What report.png draws, per dataset in the study's panel order: its labels and axis limits
    (the study's, widened only where a point would fall outside), the published points (HiFiC
    at its rate in bits, with the rate the study printed beside it), and lossyds's points of
    both variants, all in the figure model's score as the study plotted it."""
    panels = []
    for name, runs in cells.items():
        entry = spec["evaluations"][name]
        figure = entry.get("figure") or {}
        names = figure.get("codec_names") or {}
        model = entry["models"][0]
        published: dict[str, Any] = {"baseline": None, "points": []}
        for cell in runs:
            value = plotted_score(cell["published"].get("scores", {}).get(model), figure)
            if value is None:
                continue
            if cell["lossless"]:
                published["baseline"] = value
                continue
            point = {
                "codec": names.get(cell["codec"], cell["codec"]),
                "rate": published_rate(cell["published"]),
                "value": value,
            }
            if cell["published"].get("rate_scale", 1) != 1:
                point["rate_as_published"] = cell["published"]["rate"]
            published["points"].append(point)
        panel = {
            "evaluation": name,
            "title": figure.get("title", entry.get("title", name)),
            "x_label": figure.get("x_label", entry.get("rate_unit", "rate")),
            "y_label": figure.get("y_label", entry.get("score_label", entry["score"])),
            "model": model,
            "plotted": f"1 - {entry['score']}" if figure.get("plot") == "one-minus" else entry["score"],
            "order": figure.get("panel", len(panels) + 1),
            "published": published,
            **{variant: _variant_points(runs, variant, model, figure, names) for variant in VARIANTS},
        }
        panel.update(_limits(panel, figure))
        panels.append(panel)
    return sorted(panels, key=lambda p: p["order"])


def _limits(panel: dict[str, Any], figure: dict[str, Any]) -> dict[str, Any]:
    """The study's axis limits, widened (and said so) where a drawn point falls outside them."""
    groups = [panel["published"], *(panel[v] for v in VARIANTS)]
    xs = [p["rate"] for g in groups for p in g["points"] if p["rate"] is not None]
    xs += [p["rate_as_published"] for p in panel["published"]["points"] if "rate_as_published" in p]
    ys = [p["value"] for g in groups for p in g["points"]] + [
        g["baseline"] for g in groups if g["baseline"] is not None
    ]
    xlim = list(figure.get("xlim") or [0, 1.15 * max(xs, default=1)])
    ylim = list(figure.get("ylim") or [min(ys, default=0), max(ys, default=1)])
    wide_x = [min([xlim[0], *xs]), max([xlim[1], *(1.05 * x for x in xs)])]
    span = ylim[1] - ylim[0] or 1
    wide_y = [min([ylim[0], *(y - 0.05 * span for y in ys)]), max([ylim[1], *(y + 0.05 * span for y in ys)])]
    widened = wide_x != xlim or wide_y != ylim
    return {
        "xlim": wide_x,
        "ylim": wide_y,
        "study_xlim": figure.get("xlim"),
        "study_ylim": figure.get("ylim"),
        "limits_widened": widened,
    }


def table_markdown(name: str, entry: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"## {entry.get('title', name)}",
        "",
        f"Score: {entry.get('score_label', entry['score'])}; rates in {entry.get('rate_unit', 'bits')}."
        + (f" {entry['note'][0].upper()}{entry['note'][1:]}." if entry.get("note") else ""),
        "",
        "| model | run | codec | published | lossyds as published | lossyds corrected | rate published | "
        "rate as published | rate corrected | causes of the differences |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['run']} | {r['codec']} | {table_number(r['published'])} | {table_number(r[AS_PUBLISHED])} | "
            f"{table_number(r[CORRECTED])} | {table_number(r['rate_published'])} | {table_number(r['rate_as_published'])} | "
            f"{table_number(r['rate_corrected'])} | {'; '.join(r['causes'])} |"
        )
    return "\n".join(lines)


def correlation_markdown(found: list[dict[str, Any]]) -> str:
    lines = [
        "## Quality metrics against the task score",
        "",
        "Across codecs: each lossy corrected run's mean metric against its score (the figure's model).",
        "",
        "| dataset | metric | score | runs | Pearson | Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for c in found:
        pearson = "n/a (needs 3 runs, metric and score each varying)" if c["pearson"] is None else f"{c['pearson']:.3f}"
        spearman = "n/a" if c["spearman"] is None else f"{c['spearman']:.3f}"
        lines.append(f"| {c['evaluation']} | {c['metric']} | {c['score']} | {c['runs']} | {pearson} | {spearman} |")
    return "\n".join(lines)


def make_spec_report(spec_name: str | Path, builds: Path, out: Path) -> list[Path]:
    """Write report.png, report-quality.png, report.md and report.json for the study at
    `spec_name` from the builds under `builds`; returns the paths written."""
    from .builder.spec import load_spec
    from .errors import UsageError
    from .study_figure import draw_as_published_figure, draw_quality_vs_score

    spec = load_spec(spec_name)
    if not spec.get("evaluations"):
        raise UsageError(f"--spec {spec_name} names no `evaluations:`; a study report needs them.")
    cells = collect(spec, Path(builds))
    if not any(cell[v] for runs in cells.values() for cell in runs for v in VARIANTS):
        raise UsageError(f"no run of {spec_name} is built in {builds}; run `lossyds build --spec` there first.")
    tables = {name: table_rows(spec["evaluations"][name], runs) for name, runs in cells.items()}
    found = correlations(spec, cells)
    out.mkdir(parents=True, exist_ok=True)
    panels = figure_panels(spec, cells)
    paths = [
        draw_as_published_figure(panels, out / "report.png"),
        draw_quality_vs_score(found, out / "report-quality.png"),
    ]
    sections = [
        f"# {spec.get('study', 'study')}: lossyds report",
        "",
        f"Builds: {builds}. Source: {spec.get('source', '')}.",
        "",
    ]
    sections += ["![the study's figure](report.png)", "", "![quality against task score](report-quality.png)", ""]
    sections += [correlation_markdown(found), ""]
    sections += [table_markdown(name, spec["evaluations"][name], rows) + "\n" for name, rows in tables.items()]
    (out / "report.md").write_text("\n".join(sections))
    saved = {"layout": "spec", "figure": panels, "correlations": found, "tables": tables}
    (out / "report.json").write_text(json.dumps(saved, indent=2))
    return [*paths, out / "report.md", out / "report.json"]
