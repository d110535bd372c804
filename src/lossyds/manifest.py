"""manifest.json: reading, writing and the bit accounting it reports.

Units: every "bits" figure is bits (bytes x 8). bpp is payload bits per source pixel;
kbps is payload bits per source second / 1000; bits_per_audio_sample is payload bits
per (source frame x channel).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ShardError, UsageError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


def bits_summary(*, modality: str, num_samples: int, payload_bytes: int, container_bytes: int, source_bytes: int, raw_bits: int, pixels: int, seconds: float, audio_samples: int) -> dict[str, Any]:
    """The manifest's "bits" section from byte totals (see module docstring for units)."""
    payload = payload_bytes * 8
    bits: dict[str, Any] = {
        "payload": payload,
        "container": container_bytes * 8,
        "source": source_bytes * 8,
        "raw": raw_bits,
        "per_sample_mean": payload / num_samples if num_samples else 0.0,
        "payload_to_container": payload / (container_bytes * 8) if container_bytes else 0.0,
        "compression_ratio_vs_raw": raw_bits / payload if payload else 0.0,
        "compression_ratio_vs_source": source_bytes * 8 / payload if payload else 0.0,
    }
    if modality == "image":
        bits["bpp"] = payload / pixels if pixels else 0.0
        bits["source_pixels"] = pixels
    else:
        bits["kbps"] = payload / seconds / 1000 if seconds else 0.0
        bits["bits_per_audio_sample"] = payload / audio_samples if audio_samples else 0.0
        bits["source_seconds"] = seconds
        bits["source_audio_samples"] = audio_samples
    return bits


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file, fsync, then rename over `path`."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check DIR/manifest.json (DIR: a folder or an fsspec URL). UsageError if absent, ShardError if damaged."""
    from .shards import join_location, read_location

    path = join_location(directory, MANIFEST_NAME)
    try:
        text = read_location(path)
    except (OSError, ValueError) as exc:  # fsspec raises FileNotFoundError (an OSError) for URLs too
        raise UsageError(f"{directory} holds no readable {MANIFEST_NAME}; is it a finished lossyds build? ({exc.__class__.__name__})") from exc
    try:
        manifest = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path} is not valid JSON: {exc}") from exc
    return check_manifest(manifest, str(path))


def check_manifest(manifest: Any, where: str = MANIFEST_NAME) -> dict[str, Any]:
    """Validate the structure other parts rely on; ShardError naming the first problem."""
    if not isinstance(manifest, dict):
        raise ShardError(f"{where}: expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ShardError(f"{where}: format_version {version!r} is not supported (this lossyds reads {FORMAT_VERSION})")
    for key, kind in (("codec", dict), ("dataset", dict), ("shards", list), ("bits", dict), ("num_samples", int), ("modality", str)):
        if not isinstance(manifest.get(key), kind):
            raise ShardError(f"{where}: key {key!r} is missing or not a {kind.__name__}")
    if manifest["modality"] not in ("image", "audio"):
        raise ShardError(f"{where}: modality {manifest['modality']!r} is neither 'image' nor 'audio'")
    if not isinstance(manifest["codec"].get("name"), str):
        raise ShardError(f"{where}: codec.name is missing")
    total = 0
    for shard in manifest["shards"]:
        if not isinstance(shard, dict) or not isinstance(shard.get("path"), str) or not isinstance(shard.get("num_samples"), int) or shard["num_samples"] < 0:
            raise ShardError(f"{where}: malformed shard entry {shard!r}")
        name = shard["path"]
        if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            raise ShardError(f"{where}: shard path {name!r} points outside the dataset folder")
        total += shard["num_samples"]
    if total != manifest["num_samples"]:
        raise ShardError(f"{where}: shards hold {total} samples but num_samples says {manifest['num_samples']}")
    return manifest
