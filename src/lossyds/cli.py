"""The `lossyds` command line: build, info, verify, codecs.

Errors go to stderr as one sentence; exit 2 for bad usage or input, 1 for failures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .cli_build import LOCATION
from .errors import LossydsError
from .manifest import achieved_rate_text
from .storage import storage_errors

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


class LazyGroup(click.Group):
    """Builds the `build` command only when it is asked for: its flags are derived from every
    codec's and dataset's declared options, which means importing them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "build"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "build" and "build" not in self.commands:
            from .cli_build import build_command

            self.add_command(build_command(), "build")
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lossyds")
def main() -> None:
    """Build precompressed datasets of real codec bitstreams and check them."""


@main.command()
@click.argument("directory", type=LOCATION)
def merge(directory: Path) -> None:
    """Combine the finished parts in DIRECTORY/parts/ into one dataset."""
    from .build import merge as run_merge

    try:
        with storage_errors(directory, "merging in", "rerunning the merge continues it"):
            manifest = run_merge(directory)
    except LossydsError as exc:
        fail(exc)
    out.print(summary_table(manifest, directory))


@main.command()
@click.argument("directory", type=LOCATION)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info(directory: Path, as_json: bool) -> None:
    """Print the summary of a build (its manifest)."""
    from .manifest import load_manifest

    try:
        with storage_errors(directory, "reading"):
            manifest = load_manifest(directory)
    except LossydsError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        out.print(summary_table(manifest, directory))


@main.command()
@click.argument("directory", type=LOCATION)
@click.option("--decode", is_flag=True, help="Also decode every sample.")
@click.option("--weights", help="Neural codecs: the weights to decode with (must match the manifest's fingerprint).")
@click.option(
    "--cores",
    "--workers",
    "cores",
    type=click.IntRange(min=0),
    default=None,
    help="With --decode: cores to decode on, as decode threads (JPEG/WebP/AVIF/PNG) or worker processes (audio, neural codecs); default one per core up to 8; 0 decodes in the main thread. (--workers: old spelling.)",
)
def verify(directory: Path, decode: bool, weights: str | None, cores: int | None) -> None:
    """Re-hash every shard and parse every sample; exit 1 naming the first bad shard/sample."""
    from .verify import verify as run_verify

    try:
        with storage_errors(directory, "verifying"), progress_bar("verifying") as bar:
            task = bar.add_task("verify", total=None)
            report = run_verify(
                directory,
                decode=decode,
                weights=weights,
                cores=cores,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except LossydsError as exc:
        fail(exc)
    decoded = f", {report.decoded} decoded" if decode else ""
    out.print(f"ok: {report.shards} shard(s), {report.samples} samples{decoded}, {report.payload_bits} payload bits")


@main.command()
@click.argument("directory", type=LOCATION)  # a URL kept as written, so an error names it intact
@click.option("--repo", required=True, help="Hugging Face dataset repo, OWNER/NAME.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", help="Branch to upload to.")
@click.option(
    "--license", "license_id", help="Hugging Face license id (required when the source's license is unknown)."
)
@click.option("--dry-run", is_flag=True, help="Print the files and the dataset card; upload nothing.")
def push(
    directory: Path | str, repo: str, private: bool, revision: str | None, license_id: str | None, dry_run: bool
) -> None:
    """Upload a build (shards, manifest.json, a generated dataset card) to the Hugging Face Hub."""
    from .hub import plan_push
    from .hub import push as run_push

    try:
        plan = plan_push(directory, repo, license_id)
    except LossydsError as exc:
        fail(exc)
    click.echo(f"{'would upload' if dry_run else 'uploading'} to datasets/{plan.repo}:")
    for name in plan.files:
        click.echo(f"  {name}")
    for note in plan.notes:
        click.echo(note)
    if dry_run:
        click.echo("\n--- README.md (dataset card) ---")
        click.echo(plan.card)
        return
    try:
        run_push(plan, private=private, revision=revision)
    except Exception as exc:  # network, auth: report in one sentence
        click.echo(f"error: upload to {repo} failed: {exc.__class__.__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"done: https://huggingface.co/datasets/{plan.repo}")


@main.command(name="eval")
@click.argument("directory", type=LOCATION)
@click.option("--task", required=True, type=click.Choice(["asr", "classification", "segmentation", "separation"]))
@click.option(
    "--model",
    help="asr: pocketsphinx (default), hf:ID_OR_PATH (a Whisper-class speech model, its own processor) or module:function; classification: hf:ID_OR_PATH (a Hugging Face image classifier, its own processor), torchvision:NAME or module:function; segmentation: hf:ID_OR_PATH (e.g. SegFormer) or module:function; separation: oracle-irm (default), demucs:NAME_OR_PATH (a pretrained Demucs from torch hub's cache, or a checkpoint) or module:function.",
)
@click.option(
    "--cores",
    "--workers",
    "cores",
    type=click.IntRange(min=0),
    default=None,
    help="Cores to decode on, as decode threads (JPEG/WebP/AVIF/PNG) or DataLoader worker processes (audio, neural codecs); default one per core up to 8; 0 decodes in the main thread. (--workers: old spelling.)",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where the task model runs: cpu, cuda, cuda:1, ... or auto (CUDA when present).",
)
@click.option(
    "--decode-device",
    default=None,
    help="Run a neural codec's synthesis batched on this device (e.g. cuda); entropy decoding stays in the CPU workers.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Score only the first N samples (a quick check; recorded in the result).",
)
@click.option(
    "--weights", default=None, help="Neural codecs: the weights the build used (PATH or random:SEED), as for build."
)
def eval_command(
    directory: Path,
    task: str,
    model: str | None,
    cores: int | None,
    device: str,
    decode_device: str | None,
    limit: int | None,
    weights: str | None,
) -> None:
    """Run a task model on the decoded samples; writes DIR/eval-TASK.json with the bits beside the score."""
    from .evaluate import evaluate

    try:
        with progress_bar(f"eval {task}") as bar:
            job = bar.add_task("eval", total=None)
            result = evaluate(
                directory,
                task,
                model,
                cores=cores,
                device=device,
                decode_device=decode_device,
                limit=limit,
                weights=weights,
                progress=lambda done, total: bar.update(job, completed=done, total=total),
            )
    except LossydsError as exc:
        fail(exc)
    score = {k: v for k, v in result.items() if k in ("wer", "wer_whisper", "wer_raw", "top1", "top5", "miou", "sdr")}
    if result.get("bsseval"):
        score["bsseval_sdr"] = result["bsseval"]["sdr"]
    rate = ", ".join(f"{k}={v:.4g}" for k, v in result["bits"].items())
    scope = (
        f"{result['num_evaluated']} of {result['num_samples']} samples"
        if result["limit"]
        else f"{result['num_evaluated']} samples"
    )
    run = result["run"]
    out.print(
        f"{task} ({result['model']}) on {directory}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in score.items())
        + f"  [{rate}; {scope}, {run['samples_per_second']} samples/s]"
    )


@main.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for report.png and report.md."
)
@click.option(
    "--layout",
    type=click.Choice(["metrics", "study"]),
    default="metrics",
    show_default=True,
    help="metrics: a panel per score and quality metric (one modality); study: the reference study's figure, a panel per dataset.",
)
@click.option(
    "--published",
    default=None,
    help="A study's published numbers set beside the measured runs: mpq-2024 (shipped) or a YAML file.",
)
def report(directories: tuple[Path, ...], out_dir: Path, layout: str, published: str | None) -> None:
    """Rate-vs-metric plots and a table over several builds (with their eval-*.json results)."""
    from .report import make_report

    try:
        paths = make_report(list(directories), out_dir, layout=layout, published=published)
    except LossydsError as exc:
        fail(exc)
    for path in paths:
        out.print(f"wrote {path}")


def rate_flag(option: Any) -> str:
    """'--quality 1..100', '--kbps 1.5/3/6/12/24'."""
    if option.choices is not None:
        return f"{option.flag} " + "/".join(f"{c:g}" for c in option.choices)
    return f"{option.flag} {option.span[0]:g}..{option.span[1]:g}" if option.span else option.flag


@main.command(name="codecs")
def list_codecs() -> None:
    """List the codecs: modality, bitstream extension, options (flags), library, and whether it runs here."""
    from . import codecs as registry

    table = Table("codec", "modality", "extension", "options", "library", "here")
    table.columns[0].no_wrap = True
    missing = set()
    for name in registry.available():
        cls = registry.codec_class(name)
        options = " ".join(rate_flag(o) if o.name in ("quality", "kbps") else o.flag for o in cls.declared_options())
        installed = cls.package_installed() if hasattr(cls, "package_installed") else True
        if not installed:
            missing.add(cls.package)
        table.add_row(
            name,
            cls.modality,
            f".{cls.extension}",
            options or "lossless",
            cls.library,
            "yes" if installed else f"needs {cls.package}",
        )
    out.print(table)
    if missing:
        out.print(
            "Neural codecs need: pip install 'lossyds[neural]' (compressai, encodec); msillm also pip install --no-deps neuralcompression."
        )


if __name__ == "__main__":
    main()
