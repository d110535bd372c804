"""The build pipeline: builder reads -> codec encodes -> shard writer writes and accounts bits -> manifest.

Resumable: after each finished shard a journal (DIR/.lossyds-build.json) records what is
done. A rerun into an interrupted folder continues after the last finished shard; since
encoding is deterministic and shard boundaries depend only on the samples, the result
is byte-identical to an uninterrupted build.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import __version__, builders, codecs
from .builders.base import Record
from .codecs.base import Codec
from .errors import BuildStateError, CodecError, SourceError, UsageError
from .manifest import FORMAT_VERSION, MANIFEST_NAME, bits_summary, write_json_atomic, write_text_atomic
from .shards import PARTIAL_SUFFIX, ShardStats, ShardWriter
from .types import EncodedSample, Skipped, SourceSample

JOURNAL_NAME = ".lossyds-build.json"
BUILD_INFO_NAME = "build-info.json"


@dataclass
class BuildOptions:
    codec: str
    out: Path
    rate: dict[str, Any] = field(default_factory=dict)  # quality= / kbps= / bpp= and codec parameters
    dataset: str = "sample"
    root: Path | None = None
    split: str | None = None
    shard_samples: int = 1000
    shard_bytes: int = 1 << 30
    workers: int = 0  # 0 = one per CPU core
    strict: bool = False
    force: bool = False
    limit: int | None = None  # encode only the first N records (quick trials)


# ------------------------------------------------------------ per-sample work


def encoded_from_source(sample: SourceSample, codec: Codec) -> EncodedSample:
    """Encode one sample and build the metadata stored beside its bitstream."""
    bitstream = codec.encode(sample)
    meta: dict[str, Any] = {"key": sample.key, "payload_bits": len(bitstream) * 8, "codec": codec.name}
    pixels = frames = 0
    if sample.image is not None:
        height, width, channels = sample.image.shape
        meta.update(height=height, width=width, channels=channels)
        pixels = height * width
    else:
        assert sample.audio is not None and sample.sample_rate is not None
        channels, frames = sample.audio.shape
        meta.update(sample_rate=sample.sample_rate, num_frames=frames, channels=channels)
    meta["source"] = {"path": sample.source_path, "bytes": sample.source_bytes, "sha256": sample.source_sha256}
    meta["targets"] = sample.targets
    return EncodedSample(
        key=sample.key,
        bitstream=bitstream,
        meta=meta,
        attachments=sample.attachments,
        source_bytes=sample.source_bytes,
        source_sha256=sample.source_sha256,
        raw_bits=sample.raw_bits(),
        pixels=pixels,
        frames=frames,
        channels=channels,
    )


def encode_record(builder: builders.Builder, codec: Codec, record: Record) -> EncodedSample | Skipped:
    """Read + encode one record; a SourceError/CodecError becomes a Skipped carrying the reason."""
    try:
        return encoded_from_source(builder.load(record), codec)
    except (SourceError, CodecError) as exc:
        return Skipped(record.key, str(exc))


def members_of(encoded: EncodedSample, codec: Codec) -> list[tuple[str, bytes]]:
    """Tar members of one sample, bitstream first: KEY.<ext>, KEY.json, KEY.cls / KEY.txt, attachments."""
    members = [(codec.extension, encoded.bitstream), ("json", json.dumps(encoded.meta, sort_keys=True, separators=(",", ":")).encode())]
    targets = encoded.meta["targets"]
    if isinstance(targets.get("label"), int):
        members.append(("cls", str(targets["label"]).encode()))
    if isinstance(targets.get("text"), str):
        members.append(("txt", targets["text"].encode()))
    members += sorted(encoded.attachments.items())
    return members


_worker_state: tuple[builders.Builder, Codec] | None = None


def _init_worker(builder: builders.Builder, codec_name: str, rate: dict[str, Any]) -> None:
    global _worker_state
    _worker_state = (builder, codecs.get(codec_name, **rate))


def _work(record: Record) -> EncodedSample | Skipped:
    assert _worker_state is not None
    return encode_record(_worker_state[0], _worker_state[1], record)


def encode_all(builder: builders.Builder, codec: Codec, options: BuildOptions, records: list[Record], workers: int) -> Iterator[EncodedSample | Skipped]:
    """Results in record order. With workers > 1, encoding runs in worker processes with a
    bounded window of samples in flight, so memory does not grow with the dataset."""
    if workers <= 1 or len(records) < 2:
        for record in records:
            yield encode_record(builder, codec, record)
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(builder, options.codec, options.rate)) as pool:
        window: deque = deque()
        for record in records:
            window.append(pool.apply_async(_work, (record,)))
            if len(window) >= 4 * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


# ------------------------------------------------------------ journal / resume


@dataclass
class Journal:
    """Progress of an unfinished build; rewritten atomically after every finished shard."""

    settings: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)  # ShardStats as dicts
    skipped: list[dict[str, str]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=lambda: {"raw_bits": 0, "source_bytes": 0, "pixels": 0, "frames_seconds": 0.0, "audio_samples": 0})
    next_index: int = 0

    def save(self, out: Path) -> None:
        write_json_atomic(out / JOURNAL_NAME, asdict(self))

    @classmethod
    def load(cls, out: Path) -> "Journal | None":
        path = out / JOURNAL_NAME
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise BuildStateError(f"{path} is damaged ({exc}); rerun with --force to start over.") from exc


def prepare_output(options: BuildOptions, settings: dict[str, Any]) -> Journal:
    """Refuse a finished folder (unless --force), resume an interrupted one, or start fresh."""
    out = options.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    if options.force:
        for path in out.iterdir():
            if path.name in (MANIFEST_NAME, JOURNAL_NAME, BUILD_INFO_NAME, "README.md") or path.suffix == ".tar" or path.name.endswith(PARTIAL_SUFFIX):
                path.unlink()
    elif (out / MANIFEST_NAME).exists():
        raise BuildStateError(f"{out} already holds a finished build; pass --force to rebuild it.")
    journal = Journal.load(out)
    if journal is not None and journal.settings != settings:
        changed = sorted(k for k in set(settings) | set(journal.settings) if settings.get(k) != journal.settings.get(k))
        raise BuildStateError(f"{out} holds an interrupted build with other settings ({', '.join(changed)}); rerun it with the same settings, or pass --force.")
    if journal is None:
        journal = Journal(settings=settings)
    # Remove leftovers of the interrupted run: partial files and shards finished after the last journal write.
    kept = {shard["path"] for shard in journal.shards}
    for path in out.iterdir():
        if path.name.endswith(PARTIAL_SUFFIX) or (path.suffix == ".tar" and path.name not in kept):
            path.unlink()
    for shard in journal.shards:
        if not (out / shard["path"]).is_file():
            raise BuildStateError(f"{out}: shard {shard['path']} recorded as finished is missing; pass --force to rebuild.")
    return journal


# ------------------------------------------------------------ the build


ProgressCallback = Callable[[int, int], None]  # (records done, records total)


def build(options: BuildOptions, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run a build and return its manifest (also written to OUT/manifest.json)."""
    started = time.time()
    codec = codecs.get(options.codec, **options.rate)
    builder = builders.get(options.dataset, root=options.root, split=options.split, modality=codec.modality)
    records = builder.records()
    if options.limit is not None:
        records = records[: options.limit]
    if not records:
        raise UsageError(f"dataset {options.dataset!r} split {builder.split!r} at {builder.root} holds no samples.")
    seen: set[str] = set()
    for record in records:
        if record.key in seen:
            raise UsageError(f"two source files map to the same sample key {record.key!r}; rename one of them.")
        seen.add(record.key)

    settings = {
        "codec": codec.manifest_entry(),
        "dataset": options.dataset,
        "split": builder.split,
        "root": str(builder.root),
        "num_records": len(records),
        "shard_samples": options.shard_samples,
        "shard_bytes": options.shard_bytes,
        "lossyds_version": __version__,
    }
    journal = prepare_output(options, settings)
    out = options.out
    writer = ShardWriter(out, max_samples=options.shard_samples, max_bytes=options.shard_bytes, start_shard=len(journal.shards))
    workers = options.workers or os.cpu_count() or 1

    # Totals since the last finished shard; folded into the journal when a shard finishes.
    pending_skips: list[dict[str, str]] = []
    pending = {"raw_bits": 0, "source_bytes": 0, "pixels": 0, "frames_seconds": 0.0, "audio_samples": 0}

    def commit(stats: ShardStats) -> None:
        journal.shards.append(asdict(stats))
        journal.skipped.extend(pending_skips)
        for name, value in pending.items():
            journal.totals[name] += value
            pending[name] = 0
        pending_skips.clear()
        journal.next_index = stats.next_index
        journal.save(out)

    todo = records[journal.next_index:]
    done = journal.next_index
    if progress:
        progress(done, len(records))
    try:
        for result in encode_all(builder, codec, options, todo, workers):
            index = done
            if isinstance(result, Skipped):
                if options.strict:
                    raise SourceError(f"sample {result.key!r} cannot be used: {result.reason} (build stopped by --strict)")
                pending_skips.append({"key": result.key, "reason": result.reason})
            else:
                finished = writer.add_sample(index, result.key, members_of(result, codec), len(result.bitstream), result.source_sha256)
                if finished is not None:
                    commit(finished)
                pending["raw_bits"] += result.raw_bits
                pending["source_bytes"] += result.source_bytes
                pending["pixels"] += result.pixels
                if result.frames:
                    pending["frames_seconds"] += result.frames / result.meta["sample_rate"]
                    pending["audio_samples"] += result.frames * result.channels
            done += 1
            if progress:
                progress(done, len(records))
        last = writer.close(next_index=len(records))
        if last is not None:
            commit(last)
        elif pending_skips:  # trailing skipped samples after the last shard
            journal.skipped.extend(pending_skips)
            journal.next_index = len(records)
    except BaseException:
        writer.abort()
        raise

    manifest = manifest_from_journal(journal, builder, codec)
    from .hub import CARD_NAME, dataset_card

    write_text_atomic(out / CARD_NAME, dataset_card(manifest))
    write_json_atomic(out / MANIFEST_NAME, manifest)
    write_json_atomic(out / BUILD_INFO_NAME, {
        "seconds": round(time.time() - started, 3),
        "workers": workers,
        "host": platform.node(),
        "python": platform.python_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    (out / JOURNAL_NAME).unlink(missing_ok=True)
    return manifest


def manifest_from_journal(journal: Journal, builder: builders.Builder, codec: Codec) -> dict[str, Any]:
    shards = [ShardStats(**entry) for entry in journal.shards]
    num_samples = sum(s.num_samples for s in shards)
    fingerprint = hashlib.sha256()
    for shard in shards:
        fingerprint.update(shard.source_digest.encode())
    for skip in journal.skipped:
        fingerprint.update(f"skipped:{skip['key']}\n".encode())
    totals = journal.totals
    return {
        "format_version": FORMAT_VERSION,
        "lossyds_version": __version__,
        "dataset": {
            "name": builder.name,
            "split": builder.split,
            "source_root_fingerprint": fingerprint.hexdigest(),
            "license": builder.license,
            "tasks": builder.tasks(),
        },
        "codec": codec.manifest_entry(),
        "modality": codec.modality,
        "num_samples": num_samples,
        "num_skipped": len(journal.skipped),
        "skipped": journal.skipped,
        "shards": [s.to_manifest() for s in shards],
        "bits": bits_summary(
            modality=codec.modality,
            num_samples=num_samples,
            payload_bytes=sum(s.payload_bytes for s in shards),
            container_bytes=sum(s.bytes for s in shards),
            source_bytes=totals["source_bytes"],
            raw_bits=totals["raw_bits"],
            pixels=totals["pixels"],
            seconds=totals["frames_seconds"],
            audio_samples=totals["audio_samples"],
        ),
        "accounting": (
            "payload = bytes of the codec bitstream members (complete standard files: everything needed to decode), x8; "
            "container = shard files on disk, x8; source = source files as read, x8; "
            "raw = 8 bits per pixel per channel, or 16 bits per audio sample per channel"
        ),
    }
