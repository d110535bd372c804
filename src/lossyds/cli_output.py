"""What the `lossyds` commands print: the consoles, the one-sentence error exit, the
progress bar and the build summary. Shared by cli and cli_build, so neither imports the other's
output helpers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import LossydsError
from .manifest import achieved_rate_text

out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False)


def fail(exc: LossydsError) -> None:
    click.echo(f"error: {exc.cli_message()}", err=True)
    sys.exit(exc.exit_code)


def progress_bar(label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def summary_table(manifest: dict[str, Any], directory: Path) -> Table:
    bits = manifest["bits"]
    codec = manifest["codec"]
    table = Table(title=f"lossyds build: {directory}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("dataset", f"{manifest['dataset']['name']} / {manifest['dataset']['split']}")
    params = ", ".join(f"{k}={v}" for k, v in codec["params"].items())  # every setting, for the record
    if manifest["modality"] == "image" and "bpp" in codec["params"]:
        target = codec["params"]["bpp"]
        params += f"; achieved/target {bits['bpp'] / target:.3f}"
    table.add_row("codec", f"{codec['name']} ({params}) via {codec['library']} {codec['library_version']}")
    table.add_row(
        "samples", f"{manifest['num_samples']} in {len(manifest['shards'])} shard(s), {manifest['num_skipped']} skipped"
    )
    table.add_row("achieved rate", achieved_rate_text(manifest))
    if manifest["modality"] == "audio":
        requested = codec["params"].get("kbps") or codec["params"].get("target_kbps")
        if requested and abs(bits["kbps"] - requested) > 0.1 * requested:
            table.add_row(
                "note", f"requested {requested:g} kbps, achieved {bits['kbps']:.2f} kbps (the codec's own limits)"
            )
    table.add_row("bits per sample", f"{bits['per_sample_mean']:.0f} (mean payload)")
    table.add_row(
        "compression",
        f"{bits['compression_ratio_vs_raw']:.1f}:1 vs raw, {bits['compression_ratio_vs_source']:.1f}:1 vs source files",
    )
    weights = codec.get("weights")
    if weights:
        table.add_row("weights", f"{weights['name']} (sha256 {weights['sha256'][:16]}..., {weights['source']})")
        if weights["source"] == "random":
            table.add_row(
                "WARNING", "test weights (random initialisation): bitstreams are real, the codec is not a trained one"
            )
    for name, summary in (manifest.get("metrics") or {}).items():
        if summary["mean"] is not None:
            table.add_row(f"mean {name}", f"{summary['mean']:.4f} over {summary['count']} samples")
    table.add_row(
        "payload / disk",
        f"{bits['payload_to_container']:.3f} (payload {bits['payload'] // 8} B, shards {bits['container'] // 8} B)",
    )
    for skip in manifest["skipped"][:5]:
        table.add_row("skipped", f"{skip['key']}: {skip['reason']}")
    if manifest["num_skipped"] > 5:
        table.add_row("skipped", f"... and {manifest['num_skipped'] - 5} more (see manifest.json)")
    return table
