"""The `lossyds` command line: build, info, verify, codecs.

Errors go to stderr as one sentence; exit 2 for bad usage or input, 1 for failures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from . import __version__
from .cli_build import LOCATION
from .cli_output import fail, out, progress_bar, summary_table
from .errors import LossydsError, UsageError
from .eval import TASKS
from .storage import storage_errors


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


class ModelsHelpOption(click.Option):
    """`--model`, whose help is read from the task-model registry when help is shown: the
    registry imports every kind's module, which plain runs do not need."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if not self.help:
            from .eval.registry import models_help

            self.help = models_help()
        return super().get_help_record(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lossyds")
def main() -> None:
    """Build precompressed datasets of real codec bitstreams and check them."""


@main.command()
@click.argument("directory", type=LOCATION)
def merge(directory: Path) -> None:
    """Combine the finished parts in DIRECTORY/parts/ into one dataset."""
    from .builder import merge as run_merge

    try:
        with storage_errors(directory, "merging in", "rerunning the merge continues it"):
            manifest = run_merge(directory)
    except LossydsError as exc:
        fail(exc)
    out.print(summary_table(manifest, directory))


@main.command()
@click.argument("directory", type=LOCATION)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a page (FOLDER/index.html) with the summary and a few decoded samples, to check the build by eye.",
)
@click.option("--samples", default=None, help="With --html: the sample keys to show, comma-separated.")
def info(directory: Path, as_json: bool, html_dir: Path | None, samples: str | None) -> None:
    """Print the summary of a build (its manifest)."""
    from .manifest import load_manifest

    try:
        with storage_errors(directory, "reading"):
            manifest = load_manifest(directory)
            if html_dir is not None:
                from .report_html import build_page

                page = build_page(directory, html_dir, keys=sample_keys(samples))
    except LossydsError as exc:
        fail(exc)
    if html_dir is not None:
        out.print(f"wrote {page}")
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
    "cores",
    type=click.IntRange(min=0),
    default=None,
    help="With --decode: cores to decode on, as decode threads (JPEG/WebP/AVIF/PNG) or worker processes (audio, neural codecs); default one per core up to 8; 0 decodes in the main thread.",
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


def eval_option_flags(command: Any) -> Any:
    """One flag per declared eval option (lossyds.eval.options), unset unless given."""
    from .eval.options import EVAL_OPTIONS

    for entry in reversed(EVAL_OPTIONS):
        option = entry.option
        kind = click.BOOL if option.kind is bool else click.STRING
        scope = ", ".join(entry.tasks) + (
            f"; {', '.join(m + ':' for m in entry.models)} models" if entry.models else ""
        )
        default = "" if option.default is None else f" Default: {option.default}."
        command = click.option(
            option.flag, option.name, type=kind, default=None, help=f"[{scope}] {option.help}{default}"
        )(command)
    return command


@main.command(name="eval")
@eval_option_flags
@click.argument("directory", type=LOCATION, required=False)
@click.option("--task", type=click.Choice(TASKS), help="The task to score (required without --spec).")
@click.option("--model", cls=ModelsHelpOption)
@click.option(
    "--cores",
    "cores",
    type=click.IntRange(min=0),
    default=None,
    help="Cores to decode on, as decode threads (JPEG/WebP/AVIF/PNG) or DataLoader worker processes (audio, neural codecs); default one per core up to 8; 0 decodes in the main thread.",
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
@click.option(
    "--spec",
    metavar="FILE_OR_NAME",
    help="Score every built run of a study (mpq-2024, or a YAML file) with each of its models, both variants; skips what is done.",
)
@click.option(
    "--out", "spec_out", type=click.Path(path_type=Path), help="With --spec: the folder `build --spec` built into."
)
@click.option("--dry-run", is_flag=True, help="With --spec: print what is done, missing and to run, with estimates.")
def eval_command(
    directory: Path | None,
    task: str | None,
    model: str | None,
    cores: int | None,
    device: str,
    decode_device: str | None,
    limit: int | None,
    weights: str | None,
    spec: str | None,
    spec_out: Path | None,
    dry_run: bool,
    **eval_options: Any,
) -> None:
    """Run a task model on the decoded samples; writes DIR/eval-TASK.json with the bits beside the score.
    With --spec: every evaluation of a study's built runs (eval-TASK--MODEL--VARIANT.json in each)."""
    from .eval import evaluate
    from .eval import task as task_declaration

    if spec is not None:
        ignored = {"DIRECTORY": directory, "--task": task, "--model": model, "--decode-device": decode_device,
                   "--limit": limit, "--weights": weights} | {f"--{k.replace('_', '-')}": v for k, v in eval_options.items()}  # fmt: skip
        given = [flag for flag, value in ignored.items() if value is not None]
        if given:  # the study file says what each run is scored with
            fail(
                UsageError(
                    f"eval --spec takes its runs, models and options from the study file, not {', '.join(given)}."
                )
            )
        eval_spec(spec, spec_out, device, cores, dry_run)
        return
    if spec_out is not None or dry_run:
        fail(UsageError("eval --out and --dry-run go with --spec; a single build's result is written into DIRECTORY."))
    if directory is None or task is None:
        fail(UsageError("eval needs DIRECTORY and --task (or --spec NAME --out OUT)."))
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
                **eval_options,
            )
    except LossydsError as exc:
        fail(exc)
    shown = [declared for declared in task_declaration(task).scores if declared.printed]
    score = {declared.name: declared.value(result) for declared in shown if declared.value(result) is not None}
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


def eval_spec(spec: str, spec_out: Path | None, device: str, cores: int | None, dry_run: bool) -> None:
    """`eval --spec`: the study's grid of evaluations; exit 1 when some could not run."""
    from .study_eval import run_study_evaluations

    try:
        blocked = run_study_evaluations(
            spec, spec_out, device=device, cores=cores, echo=click.echo, progress_bar=progress_bar, dry_run=dry_run
        )
    except LossydsError as exc:
        fail(exc)
    if blocked:
        sys.exit(1)


@main.command()
@click.argument("directories", nargs=-1, type=click.Path(path_type=Path))
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
@click.option(
    "--spec",
    metavar="FILE_OR_NAME",
    help="A study's report (mpq-2024, or a YAML file): its figure as it drew it, the quality figure, a table per dataset.",
)
@click.option(
    "--builds", type=click.Path(path_type=Path), help="With --spec: the folder `build --spec` and `eval --spec` wrote."
)
@click.option(
    "--samples",
    default=None,
    help="The sample keys index.html shows from every build, comma-separated; default a few every build holds.",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="A lossless build of the same source, shown first in index.html (default: a lossless build among DIRECTORIES).",
)
def report(
    directories: tuple[Path, ...],
    out_dir: Path,
    layout: str,
    published: str | None,
    spec: str | None,
    builds: Path | None,
    samples: str | None,
    source: Path | None,
) -> None:
    """Rate-vs-metric plots, a table and index.html (decoded samples side by side) over several builds."""
    from .report import make_report

    try:
        if spec is not None:
            from .study_spec_report import make_spec_report

            if builds is None:
                raise UsageError("report --spec needs --builds, the folder the study was built into.")
            if directories or samples or source or published:
                raise UsageError(
                    "report --spec takes its builds from --builds and the study file, not from DIRECTORIES, --samples, --source or --published."
                )
            paths = make_spec_report(spec, builds, out_dir)
        elif not directories:
            raise UsageError("report needs build folders (or --spec NAME --builds OUT).")
        else:
            paths = make_report(
                list(directories),
                out_dir,
                layout=layout,
                published=published,
                samples=sample_keys(samples),
                source=source,
                page=True,
            )
    except LossydsError as exc:
        fail(exc)
    for path in paths:
        out.print(f"wrote {path}")


def sample_keys(text: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; None or blanks -> None (the page picks)."""
    keys = [k.strip() for k in (text or "").split(",") if k.strip()]
    return keys or None


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
