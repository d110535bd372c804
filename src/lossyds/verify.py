"""`lossyds verify`: re-hash every shard, parse every sample, optionally decode every sample."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import codecs
from .errors import ShardError
from .manifest import load_manifest
from .shards import MappedShard, payload_bytes_of, sha256_file


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
        hash_ok = sha256_file(path) == shard_info["sha256"]
        if not hash_ok:
            located = locate_damage(path, name)
            raise ShardError(f"shard {name} does not match its sha256 in the manifest (corrupt or changed){located}", shard=name)
        with MappedShard(path, name) as shard:
            if len(shard.entries) != shard_info["num_samples"]:
                raise ShardError(f"shard {name} holds {len(shard.entries)} samples but the manifest says {shard_info['num_samples']}", shard=name)
            for entry in shard.entries:
                if extension not in entry.members or "json" not in entry.members:
                    raise ShardError(f"shard {name}: sample {entry.key!r} lacks its .{extension} or .json member", shard=name, key=entry.key)
                try:
                    meta = json.loads(shard.read(entry, "json"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ShardError(f"shard {name}: sample {entry.key!r} has unreadable metadata: {exc}", shard=name, key=entry.key) from exc
                if not isinstance(meta, dict):
                    raise ShardError(f"shard {name}: sample {entry.key!r} metadata is not a JSON object", shard=name, key=entry.key)
                try:
                    bits = payload_bytes_of(entry, meta, extension) * 8
                except ShardError as exc:
                    raise ShardError(f"shard {name}: {exc}", shard=name, key=entry.key) from exc
                crcs = meta.get("crc32") or {}
                for member in entry.members:
                    if member != "json":
                        shard.read(entry, member, crcs.get(member))
                if meta.get("payload_bits") != bits:
                    raise ShardError(f"shard {name}: sample {entry.key!r} metadata does not match its {bits}-bit bitstream", shard=name, key=entry.key)
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


def locate_damage(path: Path, name: str) -> str:
    """After a shard hash mismatch: '; first damaged sample KEY' when the per-member CRCs tell which."""
    try:
        with MappedShard(path, name) as shard:
            for entry in shard.entries:
                try:
                    meta = json.loads(shard.read(entry, "json"))
                    crcs = meta.get("crc32") or {}
                    for member in entry.members:
                        if member != "json":
                            shard.read(entry, member, crcs.get(member))
                except (ShardError, ValueError, UnicodeDecodeError, AttributeError):
                    return f"; first damaged sample {entry.key!r}"
    except ShardError as exc:
        return f"; {exc}"
    return "; every member's CRC-32 still matches (the damage is in tar headers or padding)"
