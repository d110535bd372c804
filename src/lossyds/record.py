"""The sample record: one sample's members in a shard, and its `KEY.json`. Written and read here.

Members share the sample's key (the WebDataset layout), in this order:
    KEY.<ext>   the codec's bitstream (`ext` is the codec's extension: jpg, opus, lsyn, ...)
    KEY.json    the metadata below
    KEY.cls     the integer label as text, when the sample has one
    KEY.txt     the transcript, when the sample has one
    KEY.NAME.EXT  attachments in name order: lossless targets stored as files (mask.png,
                stems.drums.flac) and codec-encoded extra signals (stems.drums.opus)

KEY.json fields:
    key, codec, payload_members (the bitstream members, counted in payload_bits),
    payload_bits (8 x their bytes), height/width/channels (images) or
    sample_rate/num_frames/channels (audio), source {path, bytes, sha256},
    targets (label, text, ...), crc32 {extension: CRC-32 of every other member},
    codec_settings (per-sample settings of rate-targeting codecs), metrics (with --metrics).

The CRC-32s let the loader catch a damaged byte in any member of a sample, not only
`verify`'s whole-shard hash.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ShardError
from .types import SourceSample

if TYPE_CHECKING:
    from .shards.mapped import MappedShard
    from .shards.tar import SampleEntry

META = "json"
LABEL = "cls"
TEXT = "txt"
TARGET_MEMBERS = (META, LABEL, TEXT)  # members that are not attachments


def lossless_audio(audio: np.ndarray, sample_rate: int) -> bytes:
    """float32 [C, T] -> a 16-bit FLAC file: how reference signals (e.g. separation stems) are stored."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio.T, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def attachments_of(sample: SourceSample) -> dict[str, bytes]:
    """The sample's lossless attachments by member extension: its files as read, and its
    reference signals as FLAC (`stems.drums` -> `stems.drums.flac`)."""
    attachments = dict(sample.attachments)
    for name, signal in sorted(sample.reference_audio.items()):
        attachments[f"{name}.flac"] = lossless_audio(signal, int(sample.sample_rate or 0))
    return attachments


def describe(sample: SourceSample, codec_name: str, payload_members: list[str]) -> dict[str, Any]:
    """KEY.json of `sample` before the build picks its bitstream (no payload_bits yet)."""
    meta: dict[str, Any] = {"key": sample.key, "codec": codec_name, "payload_members": payload_members}
    if sample.image is not None:
        height, width, channels = sample.image.shape
        meta.update(height=height, width=width, channels=channels)
    else:
        assert sample.audio is not None and sample.sample_rate is not None
        channels, frames = sample.audio.shape
        meta.update(sample_rate=sample.sample_rate, num_frames=frames, channels=channels)
    meta["source"] = {"path": sample.source_path, "bytes": sample.source_bytes, "sha256": sample.source_sha256}
    meta["targets"] = sample.targets
    return meta


def members(
    extension: str, bitstream: bytes, meta: dict[str, Any], attachments: dict[str, bytes]
) -> list[tuple[str, bytes]]:
    """Every member of one sample as (extension, bytes), in record order (module docstring).
    `meta` is KEY.json without its crc32 field, which is added here."""
    others = [(extension, bitstream)]
    targets = meta["targets"]
    if isinstance(targets.get("label"), int):
        others.append((LABEL, str(targets["label"]).encode()))
    if isinstance(targets.get("text"), str):
        others.append((TEXT, targets["text"].encode()))
    others += sorted(attachments.items())
    meta = {**meta, "crc32": {member: zlib.crc32(data) for member, data in others}}
    return [others[0], (META, json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()), *others[1:]]


# ------------------------------------------------------------------ reading


@dataclass
class StoredRecord:
    """A sample record as read back from a shard (member bytes are not read until asked for)."""

    shard: MappedShard
    entry: SampleEntry
    meta: dict[str, Any]
    payload_members: list[str]

    @property
    def key(self) -> str:
        return self.entry.key

    def crc(self, member: str) -> int | None:
        return (self.meta.get("crc32") or {}).get(member)

    def read(self, member: str) -> bytes:
        """A member's bytes, checked against its CRC-32 (ShardError naming shard and key)."""
        return self.shard.read(self.entry, member, self.crc(member))

    def attachments(self, extension: str) -> list[str]:
        """Members other than the bitstream `extension` and the target members, in shard order."""
        return [member for member in self.entry.members if member != extension and member not in TARGET_MEMBERS]


def read(shard: MappedShard, entry: SampleEntry, extension: str) -> StoredRecord:
    """A sample's KEY.json and its payload members (the bitstream, plus any codec-encoded
    extras it lists), checked against the shard: every listed member present and their
    sizes summing to `payload_bits`. Raises ShardError naming shard and sample."""

    def bad(why: str) -> ShardError:
        return ShardError(f"shard {shard.name}: sample {entry.key!r} {why}", shard=shard.name, key=entry.key)

    if extension not in entry.members or META not in entry.members:
        raise bad(f"lacks its .{extension} or .{META} member")
    try:
        meta = json.loads(shard.read(entry, META))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"has unreadable metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise bad("metadata is not a JSON object")
    names = meta.get("payload_members", [extension])
    if (
        not isinstance(names, list)
        or extension not in names
        or not all(isinstance(n, str) and n in entry.members for n in names)
    ):
        raise bad(f"lists payload members {names!r} that are not all in the shard")
    bits = sum(entry.members[name][1] for name in names) * 8
    if meta.get("payload_bits") != bits:
        raise bad(f"has {bits} bitstream bits but its metadata says {meta.get('payload_bits')}")
    return StoredRecord(shard, entry, meta, names)


def check(shard: MappedShard, entry: SampleEntry, extension: str) -> int:
    """Metadata, payload size and every member's CRC-32 of one sample; its payload bits."""
    stored = read(shard, entry, extension)
    if not isinstance(stored.meta.get("crc32") or {}, dict):
        raise ShardError(
            f"shard {shard.name}: sample {entry.key!r} has malformed CRC-32 metadata", shard=shard.name, key=entry.key
        )
    for member in entry.members:
        if member != META:
            stored.read(member)
    return stored.meta["payload_bits"]


def decode_attachment(extension: str, data: bytes) -> Any:
    """A losslessly stored target member -> tensor / text / object, by its extension."""
    import torch

    if extension.endswith("png"):
        from torchvision.io import ImageReadMode, decode_png

        return decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    if extension.endswith(("flac", "wav")):
        import soundfile

        audio, _rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(audio.T))
    if extension.endswith("json"):
        return json.loads(data)
    if extension.endswith(("txt", "cls")):
        return data.decode()
    return data


def place_attachment(sample: dict[str, Any], extension: str, value: Any) -> None:
    """Where an attachment goes in the sample dict: 'mask.png' -> sample['mask'];
    'stems.drums.flac' -> sample['stems']['drums']."""
    parts = extension.split(".")[:-1]
    target = sample
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
