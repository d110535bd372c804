"""`lossyds build`: its generic flags, plus one flag per option the codecs and datasets declare."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import metrics
from .errors import LossydsError, UsageError
from .options import Option, merged_options

CLICK_TYPES: dict[type, Any] = {int: int, float: float, str: str}


class Location(click.ParamType):
    """A build folder: a local path (Path) or an fsspec URL such as s3://bucket/prefix (str, kept
    as written: click.Path would fold its '//')."""

    name = "DIR_OR_URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | Path:
        from .location import as_location

        return value if isinstance(value, Path) else as_location(value)


LOCATION = Location()


def detect_part(part: str | None) -> tuple[int, int] | None:
    """--part i/n, else a SLURM array's task id/count, else torchrun's RANK/WORLD_SIZE (when > 1)."""
    if part:
        try:
            index, count = (int(x) for x in part.split("/"))
        except ValueError:
            raise UsageError(f"--part must look like i/n, e.g. 0/4 (got {part!r}).") from None
        return index, count
    env = os.environ
    if "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        return int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")), int(
            env["SLURM_ARRAY_TASK_COUNT"]
        )
    if int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    return None


def default_workers() -> int:
    """One encoding process per core, shared among torchrun's local processes."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def run_with_progress(label: str, function: Callable, *args: Any) -> Any:
    from .cli_output import progress_bar

    with progress_bar(label) as bar:
        task = bar.add_task(label, total=None)
        return function(*args, lambda done, total: bar.update(task, completed=done, total=total))


def declared_flags() -> tuple[dict[str, list[tuple[type, Option]]], dict[str, list[tuple[type, Option]]]]:
    """(codec options, dataset options): name -> [(declaring class, option)] over every registered class."""
    from . import codecs, sources

    codec_options = merged_options([codecs.codec_class(name) for name in codecs.available()])
    source_options = merged_options([sources.source_class(name) for name in sources.available()])
    for name in set(codec_options) & set(source_options):
        raise RuntimeError(f"option {name!r} is declared by a codec and by a dataset; rename one")
    for name, owners in {**codec_options, **source_options}.items():
        if len({option.kind for _, option in owners}) > 1:
            raise RuntimeError(
                f"option {name!r} is declared with different types by {', '.join(cls.name for cls, _ in owners)}"
            )
    return codec_options, source_options


def option_flag(name: str, owners: list[tuple[type, Option]]) -> click.Option:
    """The click option for a declared option, its help naming who takes it."""
    option = owners[0][1]
    takers = ", ".join(f"{cls.name} {o.describe()}" if o.span or o.choices else cls.name for cls, o in owners)
    help_text = f"{option.help} [{takers}]"
    if option.kind is bool:
        return click.Option([f"{option.flag}/--no-{option.flag[2:]}", name], default=None, help=help_text)
    return click.Option([option.flag, name], type=CLICK_TYPES[option.kind], default=None, help=help_text)


def parse_codec_opts(pairs: tuple[str, ...]) -> dict[str, str]:
    """--codec-opt KEY=VALUE pairs (values are checked and converted by the codec's declarations)."""
    parsed = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UsageError(f"--codec-opt takes KEY=VALUE (got {pair!r}).")
        parsed[key.strip().replace("-", "_")] = value.strip()
    return parsed


GENERIC = [
    click.Option(["--codec", "codec_name"], help="Codec name (see `lossyds codecs`)."),
    click.Option(
        ["--out", "out_dir"],
        type=LOCATION,
        help="Output folder for shards and manifest.json, or an fsspec URL (s3://bucket/prefix: staged locally, uploaded shard by shard).",
    ),
    click.Option(["--dataset"], default="sample", show_default=True, help="Source dataset layout."),
    click.Option(["--root"], type=click.Path(path_type=Path), help="Folder that holds the source dataset."),
    click.Option(["--split"], help="The dataset's own split name."),
    click.Option(
        ["--codec-opt", "codec_opts"], multiple=True, help="Any declared codec option as KEY=VALUE (repeatable)."
    ),
    click.Option(
        ["--shard-samples"], default=1000, show_default=True, type=click.IntRange(min=1), help="Most samples per shard."
    ),
    click.Option(
        ["--shard-mb"],
        default=1024.0,
        show_default=True,
        type=click.FloatRange(min=0.01),
        help="Most megabytes (10^6 bytes) per shard.",
    ),
    click.Option(
        ["--shard-format", "shard_format"],
        type=click.Choice(["auto", "tar", "tar.gz", "tar.zst"]),
        default="auto",
        show_default=True,
        help="Shard files: plain tar (fastest reads), gzip-compressed tar (compact) or zstandard-compressed tar; auto = tar.gz for audio, tar for images.",
    ),
    click.Option(
        ["--workers"], default=0, type=click.IntRange(min=0), help="Encoding processes (0 = one per CPU core)."
    ),
    click.Option(
        ["--part"],
        help="Build slice i of n (i/n) into OUT/parts/; SLURM array and torchrun variables are read when absent.",
    ),
    click.Option(
        ["--device"],
        default="cpu",
        show_default=True,
        help="Neural codecs: the torch device (cpu, cuda, cuda:1) of the batched analysis transform; entropy coding stays on CPU.",
    ),
    click.Option(
        ["--encode-batch"],
        default=1,
        show_default=True,
        type=click.IntRange(min=1),
        help="Neural codecs: samples per batched analysis (images of one padded size, audio segments of one length).",
    ),
    click.Option(["--limit"], type=click.IntRange(min=1), help="Encode only the first N samples."),
    click.Option(["--strict"], is_flag=True, help="Stop on the first unreadable source file instead of skipping it."),
    click.Option(["--force"], is_flag=True, help="Rebuild a folder that already holds a finished build."),
    click.Option(
        ["--metrics", "metric_list"],
        help=f"Comma-separated quality metrics per sample ({metrics.help_text()}).",
    ),
    click.Option(
        ["--spec"],
        metavar="FILE_OR_NAME",
        help="Run a declarative grid (dataset x codec x rate) from a YAML file, or a study lossyds ships by name (mpq-2024).",
    ),
    click.Option(
        ["--skip-unavailable"],
        is_flag=True,
        help="With --spec: skip runs whose codec or dataset root is not available here.",
    ),
    click.Option(
        ["--dry-run"],
        is_flag=True,
        help="With --spec: print each run as present, missing or unavailable, with the time and disk the missing ones take, measured on a few samples here; build nothing.",
    ),
    click.Option(
        ["--distributor"],
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Who encodes: local worker processes, or Ray tasks (a local Ray runtime of --workers CPUs, or --ray-address).",
    ),
    click.Option(
        ["--ray-address"],
        metavar="HOST:PORT",
        help="With --distributor ray: the Ray cluster's head to connect to (or auto); without it a local runtime starts.",
    ),
]


def build_command() -> click.Command:
    codec_flags, source_flags = declared_flags()
    params = (
        GENERIC
        + [option_flag(n, o) for n, o in sorted(codec_flags.items())]
        + [option_flag(n, o) for n, o in sorted(source_flags.items())]
    )

    def run(**given: Any) -> None:
        from .cli_output import fail, out, summary_table

        try:
            manifest = run_build(given, set(codec_flags), set(source_flags))
        except LossydsError as exc:
            fail(exc)
        if manifest is None:
            return
        if "part" in manifest:
            p = manifest["part"]
            out.print(
                f"part {p['index']}/{p['count']} done; run `lossyds merge {given['out_dir']}` once every part has finished."
            )
        out.print(summary_table(manifest, given["out_dir"]))

    return click.Command(
        "build",
        callback=run,
        params=params,
        help="Encode a dataset into tar shards and write manifest.json (resumes an interrupted build).",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def run_build(given: dict[str, Any], codec_names: set[str], source_names: set[str]) -> dict[str, Any] | None:
    import click as _click

    from .builder import BuildOptions, build

    if given["spec"] is not None:
        from .builder.spec import run_spec

        run_spec(
            given["spec"],
            given["out_dir"],
            force=given["force"],
            workers=given["workers"] or default_workers(),
            skip_unavailable=given["skip_unavailable"],
            limit=given["limit"],
            echo=_click.echo,
            progress=run_with_progress,
            dry_run=given["dry_run"],
            distributor=given["distributor"],
            ray_address=given["ray_address"],
            device=given["device"],
            encode_batch=given["encode_batch"],
        )
        return None
    if given["dry_run"] or given["skip_unavailable"]:
        raise UsageError(
            "--dry-run and --skip-unavailable go with --spec; a single build starts with --codec and --out."
        )
    if not given["codec_name"] or given["out_dir"] is None:
        raise UsageError("build needs --codec and --out (or --spec FILE).")
    codec_options = {name: given[name] for name in codec_names if given[name] is not None}
    codec_options.update(parse_codec_opts(given["codec_opts"]))
    metric_list = given["metric_list"]
    options = BuildOptions(
        codec=given["codec_name"],
        out=given["out_dir"],
        codec_options=codec_options,
        dataset=given["dataset"],
        root=given["root"],
        split=given["split"],
        source_options={name: given[name] for name in source_names if given[name] is not None},
        shard_samples=given["shard_samples"],
        shard_mb=given["shard_mb"],
        shard_format=given["shard_format"],
        workers=given["workers"] or default_workers(),
        strict=given["strict"],
        force=given["force"],
        limit=given["limit"],
        part=detect_part(given["part"]),
        metrics=[m.strip() for m in metric_list.split(",") if m.strip()] if metric_list else [],
        distributor=given["distributor"],
        ray_address=given["ray_address"],
        device=given["device"],
        encode_batch=given["encode_batch"],
    )
    return run_with_progress(f"encoding ({given['codec_name']})", build, options)
