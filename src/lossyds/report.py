"""`lossyds report DIR... --out OUT`: rate-vs-metric plots (PNG), a markdown table, and correlations.

Each build contributes one point per metric: x is its achieved rate (bpp for images, kbps
for audio: payload bits, as in the manifest), y a task score from its eval-*.json or a mean
quality metric from its manifest. One curve per codec. Correlations (Pearson, Spearman)
between each quality metric and each task score are computed across builds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import UsageError
from .manifest import load_manifest

TASK_SCORES = ("wer", "top1", "top5", "miou", "sdr")


def collect(directory: Path) -> dict[str, Any]:
    manifest = load_manifest(directory)
    bits = manifest["bits"]
    row: dict[str, Any] = {
        "build": str(directory),
        "codec": manifest["codec"]["name"],
        "setting": ", ".join(f"{k}={v}" for k, v in manifest["codec"]["params"].items() if k in ("quality", "kbps", "bpp")) or "lossless",
        "modality": manifest["modality"],
        "rate": bits["bpp"] if manifest["modality"] == "image" else bits["kbps"],
        "bits_per_sample": bits["per_sample_mean"],
        "scores": {},
        "quality": {name: summary["mean"] for name, summary in (manifest.get("metrics") or {}).items() if summary.get("mean") is not None},
    }
    for path in sorted(Path(directory).glob("eval-*.json")):
        result = json.loads(path.read_text())
        for name in TASK_SCORES:
            if isinstance(result.get(name), (int, float)):
                row["scores"][name] = result[name]
    return row


def correlations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from scipy import stats

    out = []
    quality_names = sorted({q for r in rows for q in r["quality"]})
    score_names = sorted({s for r in rows for s in r["scores"]})
    for quality in quality_names:
        for score in score_names:
            pairs = [(r["quality"][quality], r["scores"][score]) for r in rows if quality in r["quality"] and score in r["scores"]]
            pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
            if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
                xs, ys = zip(*pairs)
                out.append({"quality_metric": quality, "task_metric": score, "builds": len(pairs), "pearson": float(stats.pearsonr(xs, ys)[0]), "spearman": float(stats.spearmanr(xs, ys)[0])})
    return out


def make_report(directories: list[Path], out: Path) -> list[Path]:
    rows = [collect(Path(d)) for d in directories]
    modalities = {r["modality"] for r in rows}
    if len(modalities) != 1:
        raise UsageError("report compares builds of one modality at a time (images in bpp, audio in kbps).")
    modality = modalities.pop()
    unit = "bits per pixel (payload)" if modality == "image" else "kbps (payload)"
    panels = sorted({s for r in rows for s in r["scores"]}) + sorted({q for r in rows for q in r["quality"]})
    if not panels:
        raise UsageError("the builds have no eval-*.json results and no --metrics; run `lossyds eval` or build with --metrics first.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for codec in sorted({r["codec"] for r in rows}):
            points = sorted((r["rate"], (r["scores"] | r["quality"])[panel]) for r in rows if r["codec"] == codec and panel in (r["scores"] | r["quality"]))
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=codec)
        rates = [r["rate"] for r in rows if r["rate"] > 0]
        if rates and max(rates) / min(rates) > 10:
            axis.set_xscale("log")
        axis.set_xlabel(unit)
        axis.set_ylabel(panel)
        axis.set_title(panel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    png = out / "report.png"
    figure.savefig(png, dpi=110)
    plt.close(figure)

    columns = sorted({s for r in rows for s in r["scores"]}) + sorted({q for r in rows for q in r["quality"]})
    lines = [f"| build | codec | setting | {'bpp' if modality == 'image' else 'kbps'} | bits/sample | " + " | ".join(columns) + " |", "|" + "---|" * (5 + len(columns))]
    for r in sorted(rows, key=lambda r: (r["codec"], r["rate"])):
        values = [(r["scores"] | r["quality"]).get(c) for c in columns]
        lines.append(f"| {Path(r['build']).name} | {r['codec']} | {r['setting']} | {r['rate']:.4f} | {r['bits_per_sample']:.0f} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values) + " |")
    table = "\n".join(lines)
    found = correlations(rows)
    if found:
        table += "\n\n| quality metric | task metric | builds | Pearson | Spearman |\n|---|---|---|---|---|\n" + "\n".join(f"| {c['quality_metric']} | {c['task_metric']} | {c['builds']} | {c['pearson']:.3f} | {c['spearman']:.3f} |" for c in found)
    markdown = out / "report.md"
    markdown.write_text(f"# lossyds report\n\n![rate vs metrics](report.png)\n\n{table}\n")
    (out / "report.json").write_text(json.dumps({"rows": rows, "correlations": found}, indent=2))
    return [png, markdown, out / "report.json"]
