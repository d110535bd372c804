"""manifest.json and the build folder: file names, reading and writing, the bit accounting, the rate text.

A build folder holds:
    manifest.json          what the build is (this module's contract; written last)
    README.md              the dataset card (lossyds.hub)
    build-info.json        timing and host facts, kept out of the manifest so it is reproducible
    shard-NNNNNN.tar[.gz]  the shards
    .lossyds-build.json    the journal of an unfinished build (removed when it finishes)
    parts/part-K-of-N/     the parts of a partitioned build, until `merge`

Units: every "bits" figure is bits (bytes x 8). bpp is payload bits per source pixel;
kbps is payload bits per source second / 1000; bits_per_audio_sample is payload bits
per (source frame x channel).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ShardError, UsageError
from .location import join_location, read_location

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CARD_NAME = "README.md"
BUILD_INFO_NAME = "build-info.json"
JOURNAL_NAME = ".lossyds-build.json"
PARTS_DIR = "parts"
SHARD_PREFIX = "shard"
# plain tar (memory-mapped reads), gzip-compressed tar (compact), zstandard-compressed tar (opt-in)
SHARD_FORMATS = ("tar", "tar.gz", "tar.zst")
PARTIAL_SUFFIX = ".partial"  # a file being written; renamed into place when complete
DIGEST_MODULUS = 1 << 256


def shard_name(index: int, shard_format: str) -> str:
    """The file name of shard number `index`: shard-000000.tar, shard-000001.tar.gz, ..."""
    return f"{SHARD_PREFIX}-{index:06d}.{shard_format}"


def is_shard_name(name: str) -> bool:
    return name.endswith(tuple(f".{shard_format}" for shard_format in SHARD_FORMATS))


def shard_format_of(name: str) -> str:
    """'shard-000003.tar.gz' -> 'tar.gz'."""
    return name.split(".", 1)[1]


def part_folder(out: str | Path, part: tuple[int, int]) -> str | Path:
    """Where part `k` of `n` of a partitioned build goes: OUT/parts/part-0000k-of-0000n/ (OUT: a folder or a URL)."""
    index, count = part
    return join_location(join_location(out, PARTS_DIR), f"part-{index:05d}-of-{count:05d}")


def key_digest(key: str, source_sha256: str) -> str:
    """Per-sample source digest (hex): sha256 of the key and the source's sha256."""
    return hashlib.sha256(f"{key}\0{source_sha256}\n".encode()).hexdigest()


def add_digests(digests: list[str]) -> str:
    """Order-free combination of digests: their sum modulo 2**256, in hex (a multiset hash), so
    the source fingerprint depends neither on shard boundaries nor on how a build was split."""
    return f"{sum(int(d, 16) for d in digests) % DIGEST_MODULUS:064x}"


def achieved_rate_text(manifest: dict[str, Any]) -> str:
    """The achieved rate in words: '0.2311 bpp' or '6.102 kbps (0.3814 bits per audio sample)'."""
    bits = manifest["bits"]
    if manifest["modality"] == "image":
        return f"{bits['bpp']:.4f} bpp"
    return f"{bits['kbps']:.3f} kbps ({bits['bits_per_audio_sample']:.4f} bits per audio sample)"


def setting_text(manifest: dict[str, Any]) -> str:
    """The codec and its requested setting in words, e.g. 'jpeg quality 5'."""
    from .codecs.base import describe_setting

    return f"{manifest['codec']['name']} {describe_setting(manifest['codec']['params'])}"


def bits_summary(
    *,
    modality: str,
    num_samples: int,
    payload_bytes: int,
    container_bytes: int,
    source_bytes: int,
    raw_bits: int,
    pixels: int,
    seconds: float,
    audio_samples: int,
) -> dict[str, Any]:
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
    path = join_location(directory, MANIFEST_NAME)
    try:
        text = read_location(path)
    except (OSError, ValueError) as exc:  # fsspec raises FileNotFoundError (an OSError) for URLs too
        raise UsageError(
            f"{directory} holds no readable {MANIFEST_NAME}; is it a finished lossyds build? ({exc.__class__.__name__})"
        ) from exc
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
    for key, kind in (
        ("codec", dict),
        ("dataset", dict),
        ("shards", list),
        ("bits", dict),
        ("num_samples", int),
        ("modality", str),
    ):
        if not isinstance(manifest.get(key), kind):
            raise ShardError(f"{where}: key {key!r} is missing or not a {kind.__name__}")
    if manifest["modality"] not in ("image", "audio"):
        raise ShardError(f"{where}: modality {manifest['modality']!r} is neither 'image' nor 'audio'")
    if not isinstance(manifest["codec"].get("name"), str):
        raise ShardError(f"{where}: codec.name is missing")
    total = 0
    for shard in manifest["shards"]:
        if (
            not isinstance(shard, dict)
            or not isinstance(shard.get("path"), str)
            or not isinstance(shard.get("num_samples"), int)
            or shard["num_samples"] < 0
        ):
            raise ShardError(f"{where}: malformed shard entry {shard!r}")
        name = shard["path"]
        if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            raise ShardError(f"{where}: shard path {name!r} points outside the dataset folder")
        total += shard["num_samples"]
    if total != manifest["num_samples"]:
        raise ShardError(f"{where}: shards hold {total} samples but num_samples says {manifest['num_samples']}")
    return manifest
