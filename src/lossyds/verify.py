"""`lossyds verify`: re-hash every shard, parse every sample, optionally decode every sample."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import codecs
from .errors import ShardError
from .manifest import load_manifest
from .shards import MappedShard, read_meta, sha256_file


@dataclass
class VerifyReport:
    shards: int
    samples: int
    decoded: int
    payload_bits: int


def verify(directory: str | Path, *, decode: bool = False, weights: str | None = None, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check a build; raises ShardError naming the first bad shard (and sample) found."""
    root = Path(directory)
    manifest = load_manifest(root)
    codec = codecs.codec_class(manifest["codec"]["name"])
    extension = codec.extension
    payload = samples = decoded = 0
    total = manifest["num_samples"]
    if decode:
        from .loader import LossyDataset

        dataset = LossyDataset(root, weights=weights)
    for shard_info in manifest["shards"]:
        name = shard_info["path"]
        path = root / name
        if not path.is_file():
            raise ShardError(f"shard {name} is missing", shard=name)
        size = path.stat().st_size
        if size != shard_info["bytes"]:
            raise ShardError(f"shard {name} is {size} bytes but the manifest says {shard_info['bytes']}", shard=name)
        if sha256_file(path) != shard_info["sha256"]:
            raise ShardError(f"shard {name} does not match its sha256 in the manifest (corrupt or changed){locate_damage(path, name, extension)}", shard=name)
        with MappedShard(path, name) as shard:
            if len(shard.entries) != shard_info["num_samples"]:
                raise ShardError(f"shard {name} holds {len(shard.entries)} samples but the manifest says {shard_info['num_samples']}", shard=name)
            for entry in shard.entries:
                bits = check_sample(shard, entry, extension)
                payload += bits
                if decode:
                    dataset.decode_entry(shard, entry)
                    decoded += 1
                samples += 1
                if progress:
                    progress(samples, total)
    if payload != manifest["bits"]["payload"]:
        raise ShardError(f"bitstreams hold {payload} bits but the manifest's bits.payload says {manifest['bits']['payload']}")
    return VerifyReport(shards=len(manifest["shards"]), samples=samples, decoded=decoded, payload_bits=payload)


def check_sample(shard: MappedShard, entry, extension: str) -> int:
    """Metadata, payload size and every member's CRC-32 of one sample; its payload bits."""
    meta, _ = read_meta(shard, entry, extension)
    crcs = meta.get("crc32") or {}
    if not isinstance(crcs, dict):
        raise ShardError(f"shard {shard.name}: sample {entry.key!r} has malformed CRC-32 metadata", shard=shard.name, key=entry.key)
    for member in entry.members:
        if member != "json":
            shard.read(entry, member, crcs.get(member))
    return meta["payload_bits"]


def locate_damage(path: Path, name: str, extension: str) -> str:
    """After a shard hash mismatch: '; first damaged sample KEY' when the per-member CRCs tell which."""
    try:
        with MappedShard(path, name) as shard:
            for entry in shard.entries:
                try:
                    check_sample(shard, entry, extension)
                except ShardError:
                    return f"; first damaged sample {entry.key!r}"
    except ShardError as exc:
        return f"; {exc}"
    return "; every member's CRC-32 still matches (the damage is in tar headers or padding)"
