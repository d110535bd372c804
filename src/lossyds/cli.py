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
from .errors import LossydsError

out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False)


def fail(exc: LossydsError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def progress_bar(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True)


def summary_table(manifest: dict[str, Any], directory: Path) -> Table:
    bits = manifest["bits"]
    codec = manifest["codec"]
    table = Table(title=f"lossyds build: {directory}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("dataset", f"{manifest['dataset']['name']} / {manifest['dataset']['split']}")
    params = ", ".join(f"{k}={v}" for k, v in codec["params"].items())
    if manifest["modality"] == "image" and "bpp" in codec["params"]:
        target = codec["params"]["bpp"]
        params += f"; achieved/target {bits['bpp'] / target:.3f}"
    table.add_row("codec", f"{codec['name']} ({params}) via {codec['library']} {codec['library_version']}")
    table.add_row("samples", f"{manifest['num_samples']} in {len(manifest['shards'])} shard(s), {manifest['num_skipped']} skipped")
    if manifest["modality"] == "image":
        table.add_row("achieved rate", f"{bits['bpp']:.4f} bpp (payload bits per source pixel)")
    else:
        table.add_row("achieved rate", f"{bits['kbps']:.3f} kbps, {bits['bits_per_audio_sample']:.4f} bits per audio sample")
        requested = codec["params"].get("kbps") or codec["params"].get("target_kbps")
        if requested and abs(bits["kbps"] - requested) > 0.1 * requested:
            table.add_row("note", f"requested {requested:g} kbps, achieved {bits['kbps']:.2f} kbps (the codec's own limits)")
    table.add_row("bits per sample", f"{bits['per_sample_mean']:.0f} (mean payload)")
    table.add_row("compression", f"{bits['compression_ratio_vs_raw']:.1f}:1 vs raw, {bits['compression_ratio_vs_source']:.1f}:1 vs source files")
    weights = codec.get("weights")
    if weights:
        table.add_row("weights", f"{weights['name']} (sha256 {weights['sha256'][:16]}..., {weights['source']})")
        if weights["source"] == "random":
            table.add_row("WARNING", "test weights (random initialisation): bitstreams are real, the codec is not a trained one")
    for name, summary in (manifest.get("metrics") or {}).items():
        if summary["mean"] is not None:
            table.add_row(f"mean {name}", f"{summary['mean']:.4f} over {summary['count']} samples")
    table.add_row("payload / disk", f"{bits['payload_to_container']:.3f} (payload {bits['payload'] // 8} B, shards {bits['container'] // 8} B)")
    for skip in manifest["skipped"][:5]:
        table.add_row("skipped", f"{skip['key']}: {skip['reason']}")
    if manifest["num_skipped"] > 5:
        table.add_row("skipped", f"... and {manifest['num_skipped'] - 5} more (see manifest.json)")
    return table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lossyds")
def main() -> None:
    """Build precompressed datasets of real codec bitstreams and check them."""


def detect_part(part: str | None) -> tuple[int, int] | None:
    """--part i/n, else a SLURM array's task id/count, else torchrun's RANK/WORLD_SIZE (when > 1)."""
    import os

    from .errors import UsageError

    if part:
        try:
            index, count = (int(x) for x in part.split("/"))
        except ValueError:
            raise UsageError(f"--part must look like i/n, e.g. 0/4 (got {part!r}).") from None
        return index, count
    env = os.environ
    if "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        return int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")), int(env["SLURM_ARRAY_TASK_COUNT"])
    if int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    return None


def default_workers() -> int:
    """One encoding process per core, shared among torchrun's local processes."""
    import os

    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def run_with_progress(label: str, function, *args):
    with progress_bar(label) as bar:
        task = bar.add_task(label, total=None)
        return function(*args, lambda done, total: bar.update(task, completed=done, total=total))


@main.command()
@click.option("--codec", "codec_name", help="Codec name (see `lossyds codecs`).")
@click.option("--quality", type=int, help="Image codec quality (e.g. JPEG 1-100).")
@click.option("--kbps", type=float, help="Audio codec bit rate in kilobits per second.")
@click.option("--bpp", type=float, help="Target bits per pixel (image codecs): quality chosen per image so the dataset's mean hits the target.")
@click.option("--target-kbps", type=float, help="Opus: target achieved kbps (whole Ogg files); the encoder setting is chosen per sample so the dataset's mean hits it.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Output folder for shards and manifest.json.")
@click.option("--dataset", default="sample", show_default=True, help="Source dataset layout.")
@click.option("--root", type=click.Path(path_type=Path), help="Folder that holds the source dataset.")
@click.option("--split", help="The dataset's own split name.")
@click.option("--chunk-seconds", type=float, help="MUSDB: cut tracks into chunks of this many seconds.")
@click.option("--compress-stems", is_flag=True, help="MUSDB: encode the stems with the codec too (default: lossless FLAC references).")
@click.option("--shard-samples", default=1000, show_default=True, type=click.IntRange(min=1), help="Most samples per shard.")
@click.option("--shard-mb", default=1024.0, show_default=True, type=click.FloatRange(min=0.01), help="Most megabytes per shard.")
@click.option("--container", type=click.Choice(["auto", "tar", "tar.gz"]), default="auto", show_default=True, help="Shard files: plain tar (fastest reads) or gzip-compressed tar (compact); auto = tar.gz for audio, tar for images.")
@click.option("--workers", default=0, type=click.IntRange(min=0), help="Encoding processes (0 = one per CPU core).")
@click.option("--part", help="Build slice i of n (i/n) into OUT/parts/; SLURM array and torchrun variables are read when absent.")
@click.option("--limit", type=click.IntRange(min=1), help="Encode only the first N samples.")
@click.option("--strict", is_flag=True, help="Stop on the first unreadable source file instead of skipping it.")
@click.option("--force", is_flag=True, help="Rebuild a folder that already holds a finished build.")
@click.option("--metrics", "metric_list", help="Comma-separated quality metrics per sample (images: psnr,ssim,ms-ssim,lpips; audio: si-sdr,pesq,stoi,mel-distance).")
@click.option("--weights", help="Neural codecs: checkpoint path, or random:SEED for test weights (default: the pretrained weights).")
@click.option("--entropy-lm", is_flag=True, help="EnCodec: entropy-code the codes with its LM (random:SEED weights give a random LM; otherwise its pretrained LM checkpoint is needed).")
@click.option("--spec", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="Run a declarative grid (dataset x codec x rate) from a YAML file.")
@click.option("--skip-unavailable", is_flag=True, help="With --spec: skip runs whose codec or dataset root is not available here.")
def build(codec_name: str | None, quality: int | None, kbps: float | None, bpp: float | None, target_kbps: float | None, out_dir: Path | None, dataset: str, root: Path | None, split: str | None, chunk_seconds: float | None, compress_stems: bool, shard_samples: int, shard_mb: float, container: str, workers: int, part: str | None, limit: int | None, strict: bool, force: bool, metric_list: str | None, weights: str | None, entropy_lm: bool, spec: Path | None, skip_unavailable: bool) -> None:
    """Encode a dataset into tar shards and write manifest.json (resumes an interrupted build)."""
    from .build import BuildOptions, build as run_build
    from .errors import UsageError

    try:
        if spec is not None:
            from .spec import run_spec

            run_spec(spec, out_dir, force=force, workers=workers or default_workers(), skip_unavailable=skip_unavailable, limit=limit, echo=click.echo, progress=run_with_progress)
            return
        if not codec_name or out_dir is None:
            raise UsageError("build needs --codec and --out (or --spec FILE).")
        rate = {k: v for k, v in (("quality", quality), ("kbps", kbps), ("bpp", bpp), ("target_kbps", target_kbps), ("weights", weights), ("entropy_lm", entropy_lm or None)) if v is not None}
        builder_options = {k: v for k, v in (("chunk_seconds", chunk_seconds), ("compress_stems", compress_stems)) if v not in (None, False)}
        options = BuildOptions(codec=codec_name, out=out_dir, rate=rate, dataset=dataset, root=root, split=split, builder_options=builder_options, shard_samples=shard_samples, shard_bytes=int(shard_mb * 1e6), container=container, workers=workers or default_workers(), strict=strict, force=force, limit=limit, part=detect_part(part), metrics=[m.strip() for m in metric_list.split(",") if m.strip()] if metric_list else [])
        manifest = run_with_progress(f"encoding ({codec_name})", run_build, options)
    except LossydsError as exc:
        fail(exc)
    if "part" in manifest:
        p = manifest["part"]
        out.print(f"part {p['index']}/{p['count']} done; run `lossyds merge {out_dir}` once every part has finished.")
    out.print(summary_table(manifest, out_dir))


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
def merge(directory: Path) -> None:
    """Combine the finished parts in DIRECTORY/parts/ into one dataset."""
    from .build import merge as run_merge

    try:
        manifest = run_merge(directory)
    except LossydsError as exc:
        fail(exc)
    out.print(summary_table(manifest, directory))


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info(directory: Path, as_json: bool) -> None:
    """Print the summary of a build (its manifest)."""
    from .manifest import load_manifest

    try:
        manifest = load_manifest(directory)
    except LossydsError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        out.print(summary_table(manifest, directory))


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--decode", is_flag=True, help="Also decode every sample.")
@click.option("--weights", help="Neural codecs: the weights to decode with (must match the manifest's fingerprint).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="With --decode: decode threads (JPEG/WebP/AVIF/PNG) or worker processes (audio, neural codecs); default one per core up to 8; 0 decodes in the main thread.")
def verify(directory: Path, decode: bool, weights: str | None, workers: int | None) -> None:
    """Re-hash every shard and parse every sample; exit 1 naming the first bad shard/sample."""
    from .verify import verify as run_verify

    try:
        with progress_bar("verifying") as bar:
            task = bar.add_task("verify", total=None)
            report = run_verify(directory, decode=decode, weights=weights, workers=workers, progress=lambda done, total: bar.update(task, completed=done, total=total))
    except LossydsError as exc:
        fail(exc)
    decoded = f", {report.decoded} decoded" if decode else ""
    out.print(f"ok: {report.shards} shard(s), {report.samples} samples{decoded}, {report.payload_bits} payload bits")


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--repo", required=True, help="Hugging Face dataset repo, OWNER/NAME.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", help="Branch to upload to.")
@click.option("--license", "license_id", help="Hugging Face license id (required when the source's license is unknown).")
@click.option("--dry-run", is_flag=True, help="Print the files and the dataset card; upload nothing.")
def push(directory: Path, repo: str, private: bool, revision: str | None, license_id: str | None, dry_run: bool) -> None:
    """Upload a build (shards, manifest.json, a generated dataset card) to the Hugging Face Hub."""
    from .hub import plan_push, push as run_push

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
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--task", required=True, type=click.Choice(["asr", "classification", "segmentation", "separation"]))
@click.option("--model", help="asr: pocketsphinx (default) or module:function; classification: torchvision:NAME or module:function; segmentation: module:function; separation: oracle-irm (default) or module:function.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Decode threads (JPEG/WebP/AVIF/PNG) or DataLoader worker processes (audio, neural codecs); default one per core up to 8; 0 decodes in the main thread.")
@click.option("--device", default="cpu", show_default=True, help="Where the task model runs: cpu, cuda, cuda:1, ... or auto (CUDA when present).")
@click.option("--decode-device", default=None, help="Run a neural codec's synthesis batched on this device (e.g. cuda); entropy decoding stays in the CPU workers.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N samples (a quick check; recorded in the result).")
@click.option("--weights", default=None, help="Neural codecs: the weights the build used (PATH or random:SEED), as for build.")
def eval_command(directory: Path, task: str, model: str | None, workers: int | None, device: str, decode_device: str | None, limit: int | None, weights: str | None) -> None:
    """Run a task model on the decoded samples; writes DIR/eval-TASK.json with the bits beside the score."""
    from .evaluate import evaluate

    try:
        with progress_bar(f"eval {task}") as bar:
            job = bar.add_task("eval", total=None)
            result = evaluate(directory, task, model, workers=workers, device=device, decode_device=decode_device, limit=limit, weights=weights,
                              progress=lambda done, total: bar.update(job, completed=done, total=total))
    except LossydsError as exc:
        fail(exc)
    score = {k: v for k, v in result.items() if k in ("wer", "top1", "top5", "miou", "sdr")}
    rate = ", ".join(f"{k}={v:.4g}" for k, v in result["bits"].items())
    scope = f"{result['num_evaluated']} of {result['num_samples']} samples" if result["limit"] else f"{result['num_evaluated']} samples"
    run = result["run"]
    out.print(f"{task} ({result['model']}) on {directory}: " + ", ".join(f"{k}={v:.4f}" for k, v in score.items())
              + f"  [{rate}; {scope}, {run['samples_per_second']} samples/s]")


@main.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for report.png and report.md.")
def report(directories: tuple[Path, ...], out_dir: Path) -> None:
    """Rate-vs-metric plots and a table over several builds (with their eval-*.json results)."""
    from .report import make_report

    try:
        paths = make_report(list(directories), out_dir)
    except LossydsError as exc:
        fail(exc)
    for path in paths:
        out.print(f"wrote {path}")


@main.command(name="codecs")
def list_codecs() -> None:
    """List the codecs, their modality, bitstream extension and rate flag."""
    from . import codecs as registry

    table = Table("codec", "modality", "extension", "rate", "library")
    table.columns[0].no_wrap = True
    for name in registry.available():
        cls = registry.codec_class(name)
        if cls.lossless:
            rate = "lossless"
        elif cls.modality == "image":
            rate = f"--quality {cls.quality_range[0]}..{cls.quality_range[1]}"
        else:
            rate = f"--kbps {cls.kbps_range[0]:g}..{cls.kbps_range[1]:g}"
        if getattr(cls, "uses_weights", False):
            rate += " --weights"
        table.add_row(name, cls.modality, f".{cls.extension}", rate, cls.library)
    out.print(table)


if __name__ == "__main__":
    main()
