"""The build, top to bottom: source -> codec -> sample record -> shard writer -> manifest.

1. plan: the codec, the source reader and the slice of its samples to build;
2. prepare_folder: refuse, resume or start the folder (folder.py), removing only what its records name;
3. encode_results: read and encode each sample, in worker processes (encode.py) or Ray tasks (ray_distributor.py);
4. RateKeeper picks each sample's bitstream, ShardStage writes its record (stages.py);
5. assemble_manifest and finish_folder (finish.py).

Partitioned: `part=(k, n)` builds the k-th of n contiguous slices of the samples into
OUT/parts/part-k-of-n/ (a complete build of its own); `merge(OUT)` combines them (merge.py).
"""

from __future__ import annotations

import itertools
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, codecs, sources
from ..codecs.base import Codec
from ..errors import LossydsError, SourceError, UsageError
from ..location import as_location, is_url
from ..manifest import SHARD_FORMATS, part_folder
from ..shards.writer import ShardWriter
from ..sources import Source, SourceRef
from .build_options import DISTRIBUTORS, BuildOptions
from .encode import Encoded, Skipped, encode_all
from .finish import assemble_manifest, finish_folder, metric_means
from .folder import FINISH_NAMES, LocalFolder, claim, prepare_folder, release_unused, unclaim_if_unused
from .journal import Journal, make_folder, remove_empty_folder
from .lock import hold_folder
from .stages import RateKeeper, ShardStage

if TYPE_CHECKING:
    from .remote import Uploader

ProgressCallback = Callable[[int, int], None]  # (source samples done, total)


@dataclass
class Plan:
    codec: Codec
    source: Source
    refs: list[SourceRef]  # this build's samples (its part's slice)
    out: str | Path  # where this build writes (a part's folder for a partitioned build): a folder or an fsspec URL
    shard_format: str
    part: dict[str, Any] | None
    settings: dict[str, Any]  # what a resumed build must match


def check_unique_keys(refs: list[SourceRef]) -> None:
    """Refuse two samples with one key, naming both source files."""
    first_path: dict[str, str] = {}
    for ref in refs:
        if ref.key in first_path:
            raise UsageError(
                f"source files {first_path[ref.key]} and {ref.path} map to the same sample key {ref.key!r}; rename one of them."
            )
        first_path[ref.key] = ref.path


def plan(options: BuildOptions) -> Plan:
    codec = codecs.get(options.codec, **options.codec_options)
    source = sources.get(
        options.dataset, root=options.root, split=options.split, modality=codec.modality, **options.source_options
    )
    refs = source.refs()
    if options.limit is not None:
        refs = refs[: options.limit]
    if not refs:
        raise UsageError(f"dataset {options.dataset!r} split {source.split!r} at {source.root} holds no samples.")
    check_unique_keys(refs)
    total, part = len(refs), None
    out: str | Path = as_location(options.out)
    if options.part is not None:
        index, count = options.part
        if not (count >= 1 and 0 <= index < count):
            raise UsageError(f"part must be i/n with 0 <= i < n (got {index}/{count}).")
        first, end = index * total // count, (index + 1) * total // count
        refs = refs[first:end]
        part = {"index": index, "count": count, "first_record": first, "num_records": len(refs), "total_records": total}
        out = part_folder(out, options.part)
    if options.distributor not in DISTRIBUTORS:
        raise UsageError(f"distributor must be one of {', '.join(DISTRIBUTORS)} (got {options.distributor!r}).")
    if options.shard_format not in (*SHARD_FORMATS, "auto"):
        raise UsageError(
            f"shard_format must be one of {', '.join(SHARD_FORMATS)}, auto (got {options.shard_format!r})."
        )
    shard_format = (
        options.shard_format if options.shard_format != "auto" else ("tar.gz" if codec.modality == "audio" else "tar")
    )
    settings = {
        "shard_format": shard_format,
        "codec": codec.manifest_entry(),
        "dataset": options.dataset,
        "split": source.split,
        "options": source.options,
        "root": str(source.root),
        "num_records": total,
        "part": part,
        "metrics": options.metrics,
        "shard_samples": options.shard_samples,
        "shard_mb": options.shard_mb,
        "lossyds_version": __version__,
    }
    return Plan(codec, source, refs, out, shard_format, part, settings)


def build(options: BuildOptions, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run a build and return its manifest (also written to OUT/manifest.json, or to the part's folder).

    The output folder is locked for the whole build (lossyds.builder.lock): a second build
    into it refuses at once. A folder this build created is removed again when the build
    stops before finishing a shard. OUT may be an fsspec URL (s3://...): the build is staged
    locally and uploaded shard by shard (lossyds.builder.remote)."""
    started = time.time()
    job = plan(options)
    if options.metrics:
        from .. import metrics

        metrics.check_metrics(options.metrics, job.codec.modality)
    if options.distributor == "ray":  # before the folder is touched: an unreachable cluster leaves nothing behind
        from .ray_distributor import prepare

        prepare(
            job.codec, options.ray_address, options.workers or os.cpu_count() or 1, options.device, options.encode_batch
        )
    if is_url(job.out):
        from .remote import staged_build

        top = str(options.out) if job.part is not None else None
        with staged_build(str(job.out), options.force, job.settings, top) as (staging, journal, uploader):
            return _run(job, staging, journal, options, progress, started, uploader)
    if job.part is not None:
        claim_local(Path(options.out))  # the parts' common folder, where merge writes
    folder = LocalFolder(job.out)
    created = claim_local(job.out)
    try:
        with hold_folder(job.out, "build"):
            try:
                journal = prepare_folder(folder, options.force, job.settings)
                return _run(job, job.out, journal, options, progress, started)
            except BaseException:
                release_unused(folder)  # while the folder is still this build's
                raise
    except BaseException:
        if created:
            unclaim_if_unused(folder)
            remove_empty_folder(job.out)  # after the lock file is gone; kept if anything is in it
        raise


def claim_local(out: Path) -> bool:
    """Refuse `out` unless it is new, empty or a lossyds build folder, then create and mark it.
    True when this call created it."""
    folder = LocalFolder(out)
    claim(folder, create=False)  # before anything is written into it, the lock file included
    created = make_folder(out)
    claim(folder)
    return created


def _run(
    job: Plan,
    folder: Path,
    journal: Journal,
    options: BuildOptions,
    progress: ProgressCallback | None,
    started: float,
    uploader: Uploader | None = None,
) -> dict[str, Any]:
    """The build proper, into the locked `folder` (the output folder, or the staging folder
    of a remote build, whose `uploader` carries each finished shard and then the finished build out)."""
    writer = ShardWriter(
        folder,
        shard_samples=options.shard_samples,
        shard_mb=options.shard_mb,
        first_shard=len(journal.shards),
        shard_format=job.shard_format,
    )
    stage = ShardStage(
        folder,
        writer,
        journal,
        job.codec.extension,
        with_metrics=bool(options.metrics),
        on_commit=uploader.shard_finished if uploader else None,
    )
    rates = RateKeeper(job.codec.rate_target(), journal, stage.pending)
    workers = options.workers or os.cpu_count() or 1
    done = journal.next_index
    if progress:
        progress(done, len(job.refs))
    try:
        for result in encode_results(job, options, done, workers):
            if isinstance(result, Skipped):
                if options.strict:
                    raise SourceError(
                        f"sample {result.key!r} cannot be used: {result.reason} (build stopped by --strict)"
                    )
                stage.skip(result.key, result.reason)
            else:
                chosen = rates.choose(result)
                stage.write(done, result, chosen, result.candidate_metrics[chosen])
            done += 1
            if progress:
                progress(done, len(job.refs))
        stage.close(next_index=len(job.refs))
    except OSError as exc:  # writing shards or the journal: a full disk, a read-only folder, ...
        writer.abort()
        raise LossydsError(
            f"writing to {job.out} failed: {exc.strerror or exc}; no partial shard was left under a final name, "
            "and rerunning after fixing it resumes from the last finished shard."
        ) from exc
    except BaseException:
        writer.abort()
        raise
    manifest = build_manifest(job, journal, options)
    build_info = {
        "seconds": round(time.time() - started, 3),
        "workers": workers,
        "distributor": options.distributor,
        "encode_device": options.device,
        "encode_batch": options.encode_batch,
        "host": platform.node(),
        "python": platform.python_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    journal.writing = list(FINISH_NAMES)  # recorded before they are written
    journal.save(folder)
    if uploader:
        uploader.journal_saved()
    finish_folder(folder, manifest, build_info)
    if uploader:
        uploader.build_finished()
    return manifest


def encode_results(job: Plan, options: BuildOptions, done: int, workers: int) -> Iterator[Encoded | Skipped]:
    """Stage 2 on the chosen distributor for the sources from index `done` on, results in source
    order: `workers` local processes, or Ray tasks (a new local Ray runtime gets `workers` CPUs)."""
    batch = options.encode_batch if getattr(job.codec, "batched_analysis", False) else 1
    # A batch's members can shift each other's latents within the batching tolerance, so a resumed
    # build re-encodes the written part of its first batch: batches are cut where an uninterrupted
    # build cut them, and the results already written are dropped.
    start = done - done % batch
    return itertools.islice(_encode_from(job, options, job.refs[start:], workers), done - start, None)


def _encode_from(job: Plan, options: BuildOptions, refs: list[SourceRef], workers: int) -> Iterator[Encoded | Skipped]:
    if options.distributor == "ray":
        from .ray_distributor import encode_on_ray

        return encode_on_ray(
            job.source,
            job.codec,
            options.codec_options,
            refs,
            options.metrics,
            address=options.ray_address,
            local_cpus=workers,
            device=options.device,
            encode_batch_size=options.encode_batch,
        )
    return encode_all(
        job.source,
        job.codec,
        options.codec_options,
        refs,
        workers,
        options.metrics,
        device=options.device,
        encode_batch_size=options.encode_batch,
    )


def build_manifest(job: Plan, journal: Journal, options: BuildOptions) -> dict[str, Any]:
    """The finished build's manifest from its plan and its journal's shards and totals."""
    source = job.source
    manifest = assemble_manifest(
        dataset={
            "name": source.name,
            "split": source.split,
            "license": source.license,
            "tasks": source.tasks(),
            "options": source.options,
        },
        codec_entry=job.codec.manifest_entry(),
        modality=job.codec.modality,
        shards=journal.shard_stats(),
        skipped=journal.skipped,
        totals=journal.totals,
        json_types=journal.json_types,
    )
    if job.part is not None:
        manifest["part"] = job.part
    if options.metrics:
        manifest["metrics"] = metric_means(options.metrics, journal.metrics)
    return manifest
