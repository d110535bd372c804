"""`lossyds verify`: re-hash every shard, parse every sample, optionally decode every sample."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import codecs, record
from .errors import ShardError
from .location import as_location, is_url, join_location, read_location
from .manifest import load_manifest
from .shards.mapped import MappedShard
from .shards.writer import sha256_file


@dataclass
class VerifyReport:
    shards: int
    samples: int
    decoded: int
    payload_bits: int


def verify(
    directory: str | Path,
    *,
    decode: bool = False,
    weights: str | None = None,
    cores: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check a build; raises ShardError naming the first bad shard (and sample) found.

    First every shard's size and sha256 and every sample's metadata, payload size and member
    CRC-32s; then, with `decode`, every sample is decoded through the loader, on `cores`:
    decode threads (JPEG/WebP/AVIF/PNG) or DataLoader worker processes (the rest); None =
    one per core up to 8, 0 = in this thread. `progress(done, total)` counts samples checked
    plus samples decoded."""
    root = as_location(directory)
    manifest = load_manifest(root)
    codec = codecs.codec_class(manifest["codec"]["name"])
    extension = codec.extension
    payload = samples = decoded = 0
    total = manifest["num_samples"] * (2 if decode else 1)
    if decode:  # built first: unknown codecs and weights of another fingerprint fail before any hashing
        from .load import LossyDataset, decode_threads_for, default_cores

        cores = default_cores() if cores is None else cores
        threads = decode_threads_for(manifest["codec"]["name"], cores)
        dataset = LossyDataset(
            root, weights=weights, decode_threads=threads, rank=0, world_size=1, manifest=manifest
        )  # every sample, under torchrun too
    for shard_info in manifest["shards"]:
        name = shard_info["path"]
        path = join_location(root, name)
        data = _fetch(path, name) if is_url(root) else None  # a remote shard is read once, then hashed and parsed
        if data is None and not path.is_file():
            raise ShardError(f"shard {name} is missing", shard=name)
        size = len(data) if data is not None else path.stat().st_size
        if size != shard_info["bytes"]:
            raise ShardError(f"shard {name} is {size} bytes but the manifest says {shard_info['bytes']}", shard=name)
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
        if digest != shard_info["sha256"]:
            raise ShardError(
                f"shard {name} does not match its sha256 in the manifest (corrupt or changed){locate_damage(path, name, extension, data)}",
                shard=name,
            )
        with MappedShard(path, name, data=data) as shard:
            if len(shard.entries) != shard_info["num_samples"]:
                raise ShardError(
                    f"shard {name} holds {len(shard.entries)} samples but the manifest says {shard_info['num_samples']}",
                    shard=name,
                )
            for entry in shard.entries:
                payload += record.check(shard, entry, extension)
                samples += 1
                if progress:
                    progress(samples, total)
    if payload != manifest["bits"]["payload"]:
        raise ShardError(
            f"bitstreams hold {payload} bits but the manifest's bits.payload says {manifest['bits']['payload']}"
        )
    if decode:
        from .load import decoded_samples

        for _ in decoded_samples(dataset, cores):  # a sample that does not decode raises ShardError naming it
            decoded += 1
            if progress:
                progress(samples + decoded, total)
        if decoded != samples:
            raise ShardError(f"{decoded} of {samples} samples came out of the decoder")
    return VerifyReport(shards=len(manifest["shards"]), samples=samples, decoded=decoded, payload_bits=payload)


def _fetch(url: str, name: str) -> bytes:
    try:
        return read_location(url)
    except FileNotFoundError:
        raise ShardError(f"shard {name} is missing", shard=name) from None
    except OSError as exc:
        raise ShardError(f"shard {name} cannot be read: {exc}", shard=name) from exc


def locate_damage(path: str | Path, name: str, extension: str, data: bytes | None = None) -> str:
    """After a shard hash mismatch: '; first damaged sample KEY, from byte N of the shard' (of the
    decompressed tar for a compressed shard) when the per-member CRCs tell which, else the
    damage the shard reports (for a damaged compressed stream, its first damaged sample)."""
    try:
        with MappedShard(path, name, data=data, tolerate_damage=True) as shard:
            where = "of the decompressed tar" if name.endswith((".gz", ".zst")) else "of the shard"
            for entry in shard.entries:  # for a compressed shard, those before its first damaged sample
                try:
                    record.check(shard, entry, extension)
                except ShardError:
                    offset = min(offset for offset, _size in entry.members.values())
                    return f"; first damaged sample {entry.key!r}, from byte {offset} {where}"
            if shard.damage:
                return f"; {shard.damage[0]}"
    except ShardError as exc:
        return f"; {exc}"
    return "; every member's CRC-32 still matches (the damage is in tar headers or padding)"
