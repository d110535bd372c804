"""The build pipeline: builder reads -> codec encodes -> shard writer writes and accounts bits -> manifest.

Resumable: after each finished shard a journal (OUT/.lossyds-build.json) records what is
done. A rerun into an interrupted folder continues after the last finished shard; since
encoding is deterministic and shard boundaries depend only on the samples, the result
is byte-identical to an uninterrupted build.

Partitioned: `part=(k, n)` builds the k-th of n contiguous slices of the records into
OUT/parts/part-k-of-n/ (a complete build of its own); `merge(OUT)` combines finished
parts into one dataset in OUT.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import __version__, builders, codecs
from .builders.base import Record
from .codecs.base import Codec
from .errors import BuildStateError, CodecError, LossydsError, SourceError, UsageError
from .manifest import FORMAT_VERSION, MANIFEST_NAME, bits_summary, load_manifest, write_json_atomic, write_text_atomic
from .shards import CONTAINERS, PARTIAL_SUFFIX, ShardStats, ShardWriter, add_digests, is_shard_name, key_digest
from .types import SourceSample

JOURNAL_NAME = ".lossyds-build.json"
BUILD_INFO_NAME = "build-info.json"
CARD_NAME = "README.md"
PARTS_DIR = "parts"


@dataclass
class BuildOptions:
    codec: str
    out: Path
    rate: dict[str, Any] = field(default_factory=dict)  # quality= / kbps= / bpp= and codec parameters
    dataset: str = "sample"
    root: Path | None = None
    split: str | None = None
    builder_options: dict[str, Any] = field(default_factory=dict)  # dataset-specific (MUSDB chunk_seconds, ...)
    shard_samples: int = 1000
    shard_bytes: int = 1 << 30
    workers: int = 0  # 0 = one per CPU core
    strict: bool = False
    force: bool = False
    limit: int | None = None  # encode only the first N records (quick trials)
    part: tuple[int, int] | None = None  # (k, n): build slice k of n into OUT/parts/
    container: str = "auto"  # "tar" | "tar.gz" | "auto": gzip for audio (small payloads), plain tar for images
    metrics: list[str] = field(default_factory=list)  # per-sample quality metrics (lossyds.metrics)


# ------------------------------------------------------------ per-sample work


@dataclass
class Encoded:
    """A sample after encoding, before the build picks among rate candidates."""

    key: str
    candidates: list[tuple[dict[str, Any], bytes]]  # (per-sample codec settings, main bitstream)
    candidate_metrics: list[dict[str, float]]  # quality metrics of each candidate (empty dicts without --metrics)
    meta: dict[str, Any]  # KEY.json without payload_bits (added when a candidate is chosen)
    attachments: dict[str, bytes]  # lossless targets and codec-encoded extra signals
    extra_payload: int  # bytes of codec bitstreams among the attachments (compressed stems)
    source_bytes: int
    source_sha256: str
    raw_bits: int
    pixels: int
    seconds: float
    audio_samples: int


@dataclass
class Skipped:
    key: str
    reason: str


def encode_record(builder: builders.Builder, codec: Codec, record: Record, metric_names: list[str] = ()) -> Encoded | Skipped:
    """Read + encode one record; a SourceError/CodecError becomes a Skipped carrying the reason."""
    try:
        sample = builder.load(record)
        candidates = codec.candidates(sample)
        candidate_metrics: list[dict[str, float]] = [{} for _ in candidates]
        if metric_names:
            from . import metrics

            shape_meta = {"channels": sample.image.shape[2]} if sample.image is not None else {"sample_rate": sample.sample_rate, "num_frames": sample.audio.shape[1], "channels": sample.audio.shape[0]}
            source = sample.image if sample.image is not None else sample.audio
            rate = None if sample.image is not None else sample.sample_rate
            candidate_metrics = [metrics.compute(list(metric_names), source, codec.decode(data, shape_meta), rate) for _, data in candidates]
        attachments = dict(sample.attachments)
        payload_members = [codec.extension]
        extra_payload = 0
        for name, signal in sorted(sample.extra_audio.items()):
            data = codec.encode(SourceSample(key=f"{sample.key}/{name}", audio=signal, sample_rate=sample.sample_rate, audio_bit_depth=sample.audio_bit_depth))
            member = f"{name}.{codec.extension}"
            if member in attachments:
                raise CodecError(f"{member} would be both a lossless reference and a codec bitstream")
            attachments[member] = data
            payload_members.append(member)
            extra_payload += len(data)
    except (SourceError, CodecError) as exc:
        return Skipped(record.key, str(exc))
    meta: dict[str, Any] = {"key": sample.key, "codec": codec.name, "payload_members": payload_members}
    pixels = audio_samples = 0
    seconds = 0.0
    if sample.image is not None:
        height, width, channels = sample.image.shape
        meta.update(height=height, width=width, channels=channels)
        pixels = height * width
    else:
        assert sample.audio is not None and sample.sample_rate is not None
        channels, frames = sample.audio.shape
        meta.update(sample_rate=sample.sample_rate, num_frames=frames, channels=channels)
        seconds = frames / sample.sample_rate
        audio_samples = frames * channels
    meta["source"] = {"path": sample.source_path, "bytes": sample.source_bytes, "sha256": sample.source_sha256}
    meta["targets"] = sample.targets
    return Encoded(sample.key, candidates, candidate_metrics, meta, attachments, extra_payload, sample.source_bytes, sample.source_sha256, sample.raw_bits(), pixels, seconds, audio_samples)


def members_of(encoded: Encoded, codec: Codec, bitstream: bytes, meta: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Tar members of one sample, bitstream first: KEY.<ext>, KEY.json, KEY.cls / KEY.txt, attachments.

    KEY.json records the CRC-32 of every other member, so a damaged byte anywhere in a
    sample is caught by the loader (not only by `verify`'s shard hash)."""
    others = [(codec.extension, bitstream)]
    targets = meta["targets"]
    if isinstance(targets.get("label"), int):
        others.append(("cls", str(targets["label"]).encode()))
    if isinstance(targets.get("text"), str):
        others.append(("txt", targets["text"].encode()))
    others += sorted(encoded.attachments.items())
    meta = {**meta, "crc32": {extension: zlib.crc32(data) for extension, data in others}}
    return [others[0], ("json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()), *others[1:]]


_worker_state: tuple[builders.Builder, Codec] | None = None


def _init_worker(builder: builders.Builder, codec_name: str, rate: dict[str, Any], metric_names: list[str]) -> None:
    global _worker_state
    import torch

    torch.set_num_threads(1)  # one process per core already
    _worker_state = (builder, codecs.get(codec_name, **rate), metric_names)


def _work(batch: list[Record]) -> list[Encoded | Skipped]:
    assert _worker_state is not None
    return [encode_record(*_worker_state[:2], record, _worker_state[2]) for record in batch]


TASK_RECORDS = 4  # records per worker task: amortises the pool's per-task cost (pickling, queues)


def encode_all(builder: builders.Builder, codec: Codec, options: BuildOptions, records: list[Record], workers: int) -> Iterator[Encoded | Skipped]:
    """Results in record order. With workers > 1, encoding runs in worker processes with a
    bounded window of tasks in flight, so memory does not grow with the dataset."""
    if workers <= 1 or len(records) < 2:
        for record in records:
            yield encode_record(builder, codec, record, options.metrics)
        return
    # fork is fast, but a parent that has run torch ops (a neural codec's model) leaves
    # OpenMP thread pools that deadlock in forked children: spawn fresh processes then.
    neural = getattr(codec, "uses_weights", False)
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") and not neural else "spawn")
    size = 1 if neural else TASK_RECORDS  # neural samples are slow enough on their own
    with context.Pool(workers, initializer=_init_worker, initargs=(builder, options.codec, options.rate, options.metrics)) as pool:
        window: deque = deque()
        for start in range(0, len(records), size):
            window.append(pool.apply_async(_work, (records[start:start + size],)))
            if len(window) >= 4 * workers:
                yield from window.popleft().get()
        while window:
            yield from window.popleft().get()


# ------------------------------------------------------------ journal / resume

TOTAL_KEYS = ("raw_bits", "source_bytes", "pixels", "seconds", "audio_samples", "payload_bytes")


def zero_totals() -> dict[str, Any]:
    return {k: 0.0 if k == "seconds" else 0 for k in TOTAL_KEYS}


@dataclass
class Journal:
    """Progress of an unfinished build; rewritten atomically after every finished shard."""

    settings: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)  # ShardStats as dicts
    skipped: list[dict[str, str]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=zero_totals)
    metrics: dict[str, list[float]] = field(default_factory=dict)  # name -> [sum, count] over finite values
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


OWNED = (MANIFEST_NAME, JOURNAL_NAME, BUILD_INFO_NAME, CARD_NAME)


def prepare_output(out: Path, force: bool, settings: dict[str, Any]) -> Journal:
    """Refuse a finished folder (unless --force), resume an interrupted one, or start fresh."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    if force:
        for path in out.iterdir():
            if path.name in OWNED or is_shard_name(path.name) or path.name.endswith(PARTIAL_SUFFIX):
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
        if path.name.endswith(PARTIAL_SUFFIX) or (is_shard_name(path.name) and path.name not in kept):
            path.unlink()
    for shard in journal.shards:
        if not (out / shard["path"]).is_file():
            raise BuildStateError(f"{out}: shard {shard['path']} recorded as finished is missing; pass --force to rebuild.")
    return journal


def part_folder(out: Path, part: tuple[int, int]) -> Path:
    index, count = part
    return out / PARTS_DIR / f"part-{index:05d}-of-{count:05d}"


# ------------------------------------------------------------ the build


ProgressCallback = Callable[[int, int], None]  # (records done, records total)


def build(options: BuildOptions, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run a build and return its manifest (also written to OUT/manifest.json, or to the part's folder)."""
    started = time.time()
    codec = codecs.get(options.codec, **options.rate)
    builder = builders.get(options.dataset, root=options.root, split=options.split, modality=codec.modality, **options.builder_options)
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
    total_records = len(records)
    out = options.out
    part_info = None
    if options.part is not None:
        index, count = options.part
        if not (count >= 1 and 0 <= index < count):
            raise UsageError(f"--part must be i/n with 0 <= i < n (got {index}/{count}).")
        first, end = index * total_records // count, (index + 1) * total_records // count
        records = records[first:end]
        part_info = {"index": index, "count": count, "first_record": first, "num_records": len(records), "total_records": total_records}
        out = part_folder(out, options.part)

    if options.container not in (*CONTAINERS, "auto"):
        raise UsageError(f"--container must be one of {', '.join(CONTAINERS)}, auto (got {options.container!r}).")
    container = options.container if options.container != "auto" else ("tar.gz" if codec.modality == "audio" else "tar")
    settings = {
        "container": container,
        "codec": codec.manifest_entry(),
        "dataset": options.dataset,
        "split": builder.split,
        "options": builder.options,
        "root": str(builder.root),
        "num_records": total_records,
        "part": part_info,
        "metrics": options.metrics,
        "shard_samples": options.shard_samples,
        "shard_bytes": options.shard_bytes,
        "lossyds_version": __version__,
    }
    journal = prepare_output(out, options.force, settings)
    writer = ShardWriter(out, max_samples=options.shard_samples, max_bytes=options.shard_bytes, start_shard=len(journal.shards), container=container)
    workers = options.workers or os.cpu_count() or 1

    # Totals since the last finished shard; folded into the journal when a shard finishes.
    pending_skips: list[dict[str, str]] = []
    pending = zero_totals()
    pending_metrics: dict[str, list[float]] = {}
    if options.metrics:
        from . import metrics as metric_registry

        metric_registry.check_metrics(options.metrics, codec.modality)
    rate_target = codec.rate_target()  # ("pixels", bpp) or ("seconds", bits per second), or None

    def commit(stats: ShardStats) -> None:
        journal.shards.append(asdict(stats))
        journal.skipped.extend(pending_skips)
        for name in TOTAL_KEYS:
            journal.totals[name] += pending[name]
            pending[name] = 0
        pending_skips.clear()
        for name, (total, count) in pending_metrics.items():
            summed = journal.metrics.setdefault(name, [0.0, 0])
            summed[0] += total
            summed[1] += count
        pending_metrics.clear()
        journal.next_index = stats.next_index
        journal.save(out)

    def choose(encoded: Encoded) -> int:
        """Among rate candidates, the index of the one that keeps the dataset's running
        achieved rate (payload bits per pixel or per second so far) closest to the target."""
        if len(encoded.candidates) == 1 or rate_target is None:
            return 0
        unit, bits_per_unit = rate_target
        bits = (journal.totals["payload_bytes"] + pending["payload_bytes"]) * 8 + encoded.extra_payload * 8
        units = journal.totals[unit] + pending[unit] + getattr(encoded, unit)
        return min(range(len(encoded.candidates)), key=lambda i: abs(bits + len(encoded.candidates[i][1]) * 8 - bits_per_unit * units))

    done = journal.next_index
    if progress:
        progress(done, len(records))
    try:
        for result in encode_all(builder, codec, options, records[journal.next_index:], workers):
            if isinstance(result, Skipped):
                if options.strict:
                    raise SourceError(f"sample {result.key!r} cannot be used: {result.reason} (build stopped by --strict)")
                pending_skips.append({"key": result.key, "reason": result.reason})
            else:
                chosen = choose(result)
                settings_used, bitstream = result.candidates[chosen]
                payload = len(bitstream) + result.extra_payload
                meta = {**result.meta, "payload_bits": payload * 8, **({"codec_settings": settings_used} if settings_used else {})}
                if options.metrics:
                    meta["metrics"] = result.candidate_metrics[chosen]
                    for name, value in meta["metrics"].items():
                        if math.isfinite(value):
                            summed = pending_metrics.setdefault(name, [0.0, 0])
                            summed[0] += value
                            summed[1] += 1
                finished = writer.add_sample(done, result.key, members_of(result, codec, bitstream, meta), payload, result.source_sha256)
                if finished is not None:
                    commit(finished)
                for name in TOTAL_KEYS[:-1]:
                    pending[name] += getattr(result, name)
                pending["payload_bytes"] += payload
            done += 1
            if progress:
                progress(done, len(records))
        last = writer.close(next_index=len(records))
        if last is not None:
            commit(last)
        elif pending_skips:  # trailing skipped samples after the last shard
            journal.skipped.extend(pending_skips)
            journal.next_index = len(records)
    except OSError as exc:  # writing shards or the journal: a full disk, a read-only folder, ...
        writer.abort()
        raise LossydsError(f"writing to {out} failed: {exc.strerror or exc}; no partial shard was left under a final name, and rerunning after fixing it resumes from the last finished shard.") from exc
    except BaseException:
        writer.abort()
        raise

    manifest = manifest_from_parts(
        builder_info={"name": builder.name, "split": builder.split, "license": builder.license, "tasks": builder.tasks(), "options": builder.options},
        codec_entry=codec.manifest_entry(),
        modality=codec.modality,
        shards=[ShardStats(**entry) for entry in journal.shards],
        skipped=journal.skipped,
        totals=journal.totals,
    )
    if part_info is not None:
        manifest["part"] = part_info
    if options.metrics:
        manifest["metrics"] = {name: {"mean": total / count if count else None, "count": count} for name, (total, count) in ((n, journal.metrics.get(n, [0.0, 0])) for n in options.metrics)}
    finish_folder(out, manifest, {
        "seconds": round(time.time() - started, 3),
        "workers": workers,
        "host": platform.node(),
        "python": platform.python_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return manifest


def finish_folder(out: Path, manifest: dict[str, Any], build_info: dict[str, Any]) -> None:
    from .hub import dataset_card

    write_text_atomic(out / CARD_NAME, dataset_card(manifest))
    write_json_atomic(out / BUILD_INFO_NAME, build_info)
    write_json_atomic(out / MANIFEST_NAME, manifest)
    (out / JOURNAL_NAME).unlink(missing_ok=True)


def manifest_from_parts(*, builder_info: dict[str, Any], codec_entry: dict[str, Any], modality: str, shards: list[ShardStats], skipped: list[dict[str, str]], totals: dict[str, Any]) -> dict[str, Any]:
    num_samples = sum(s.num_samples for s in shards)
    # Order-free fingerprint of the source: a sum of per-sample digests, so it does not
    # depend on shard boundaries or on how a build was partitioned.
    fingerprint = add_digests([s.source_digest for s in shards] + [key_digest(f"skipped:{s['key']}", "") for s in skipped])
    return {
        "format_version": FORMAT_VERSION,
        "lossyds_version": __version__,
        "dataset": {**builder_info, "source_root_fingerprint": fingerprint},
        "codec": codec_entry,
        "modality": modality,
        "num_samples": num_samples,
        "num_skipped": len(skipped),
        "skipped": skipped,
        "shards": [s.to_manifest() for s in shards],
        "bits": bits_summary(
            modality=modality,
            num_samples=num_samples,
            payload_bytes=sum(s.payload_bytes for s in shards),
            container_bytes=sum(s.bytes for s in shards),
            source_bytes=totals["source_bytes"],
            raw_bits=totals["raw_bits"],
            pixels=totals["pixels"],
            seconds=totals["seconds"],
            audio_samples=totals["audio_samples"],
        ),
        "totals": totals,
        "source_digests": [s.source_digest for s in shards],
        "accounting": (
            "payload = bytes of the codec bitstream members (complete standard files: everything needed to decode), x8; "
            "container = shard files on disk, x8; source = source files as read, x8; "
            "raw = 8 bits per pixel per channel, or 16 bits per audio sample per channel"
        ),
    }


# ------------------------------------------------------------ merging parts


def merge(out: str | Path) -> dict[str, Any]:
    """Combine OUT/parts/part-*-of-N (all finished, same settings) into one dataset in OUT.

    Shards are renumbered in part order (hard links when possible, else copies), then the
    merged manifest and card are written and the parts folder removed."""
    out = Path(out)
    folders = sorted((out / PARTS_DIR).glob("part-*-of-*")) if (out / PARTS_DIR).is_dir() else []
    if not folders:
        raise UsageError(f"{out} holds no {PARTS_DIR}/part-*-of-* folders to merge.")
    if (out / MANIFEST_NAME).exists():
        raise BuildStateError(f"{out} already holds a finished build; remove it before merging parts into it.")
    manifests = []
    for folder in folders:
        if not (folder / MANIFEST_NAME).is_file():
            raise BuildStateError(f"part {folder.name} is not finished (no manifest.json); rerun its build first.")
        manifests.append(load_manifest(folder))
    count = manifests[0]["part"]["count"]
    indices = sorted(m["part"]["index"] for m in manifests)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise BuildStateError(f"parts {', '.join(map(str, missing))} of {count} are missing in {out / PARTS_DIR}.")
    first = manifests[0]
    for manifest, folder in zip(manifests, folders):
        for key in ("codec", "modality"):
            if manifest[key] != first[key]:
                raise BuildStateError(f"part {folder.name} was built with another {key} than part {folders[0].name}.")
        same_source = {k: v for k, v in manifest["dataset"].items() if k != "source_root_fingerprint"} == {k: v for k, v in first["dataset"].items() if k != "source_root_fingerprint"}
        if not same_source or manifest["part"]["total_records"] != first["part"]["total_records"]:
            raise BuildStateError(f"part {folder.name} was built from another dataset or split than part {folders[0].name}.")
    shards: list[ShardStats] = []
    totals = zero_totals()
    skipped: list[dict[str, str]] = []
    number = 0
    for manifest, folder in sorted(zip(manifests, folders), key=lambda mf: mf[0]["part"]["index"]):
        for shard, digest in zip(manifest["shards"], manifest["source_digests"]):
            name = f"shard-{number:06d}.{shard['path'].split('.', 1)[1]}"
            target = out / name
            tmp = out / (name + PARTIAL_SUFFIX)
            tmp.unlink(missing_ok=True)
            try:
                os.link(folder / shard["path"], tmp)
            except OSError:
                shutil.copyfile(folder / shard["path"], tmp)
            os.replace(tmp, target)
            shards.append(ShardStats(path=name, num_samples=shard["num_samples"], bytes=shard["bytes"], sha256=shard["sha256"], payload_bytes=shard["payload_bytes"], first_index=0, next_index=0, source_digest=digest))
            number += 1
        skipped += manifest["skipped"]
        for key in TOTAL_KEYS:
            totals[key] += manifest["totals"][key]
    dataset = {k: v for k, v in first["dataset"].items() if k != "source_root_fingerprint"}
    merged = manifest_from_parts(builder_info=dataset, codec_entry=first["codec"], modality=first["modality"], shards=shards, skipped=skipped, totals=totals)
    merged["merged_from_parts"] = count
    if first.get("metrics"):  # means weighted by each part's count of finite values
        merged["metrics"] = {}
        for name in first["metrics"]:
            parts_of = [m["metrics"][name] for m in manifests if m.get("metrics", {}).get(name)]
            counted = sum(p["count"] for p in parts_of)
            total = sum(p["mean"] * p["count"] for p in parts_of if p["mean"] is not None)
            merged["metrics"][name] = {"mean": total / counted if counted else None, "count": counted}
    finish_folder(out, merged, {"merged_parts": [f.name for f in folders], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    shutil.rmtree(out / PARTS_DIR)
    return merged
