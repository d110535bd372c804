"""lossyds bitstreams inside an existing `webdataset` pipeline.

    decoder = lossyds.webdataset_decoder("out/speech-opus")      # a build folder or its manifest.json
    for sample in webdataset.WebDataset(urls).map(decoder):      # every codec: lossyds's own sample dicts
        ...
    webdataset.WebDataset(urls).decode(decoder)                   # image codecs: as a member handler too

As a `.map` function it takes webdataset's raw sample (`__key__` and member bytes by
extension) and returns exactly the dict lossyds's loader yields for that sample: the same
decoded tensor, `payload_bits`, targets and attachments, with the CRC-32s of KEY.json
checked. As a `.decode` handler (called with one member's extension and bytes) it decodes
the bitstream member of an image build, taking the channel count from the file's header:
exact for JPEG, PNG and `.lsyn`, but a grayscale source stored as WebP or AVIF (formats
that hold it as color) comes out with 3 channels where the loader gives 1. Audio
bitstreams need the sample's KEY.json (source rate and length), which a per-member
handler never sees, so for audio it says to use `.map` instead.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from .. import codecs, record
from ..errors import ShardError, UsageError
from ..location import as_location
from ..manifest import MANIFEST_NAME, load_manifest
from .decode import Decoder


class _MemberRecord:
    """A webdataset sample's members as lossyds.record.StoredRecord presents a shard's."""

    def __init__(self, sample: dict[str, Any], extension: str):
        self.key = str(sample.get("__key__", "?"))
        self.members = {name: value for name, value in sample.items() if not name.startswith("__")}
        raw = self.members.get(record.META)
        if raw is None or extension not in self.members:
            raise ShardError(f"sample {self.key!r} lacks its .{extension} or .{record.META} member", key=self.key)
        self.meta = raw if isinstance(raw, dict) else json.loads(bytes(raw))
        self.payload_members = self.meta.get("payload_members", [extension])
        self._extension = extension

    def read(self, member: str) -> bytes:
        data = self.members[member]
        if not isinstance(data, (bytes, bytearray)):
            raise UsageError(
                f"member .{member} of {self.key!r} was decoded before lossyds saw it; map lossyds's decoder before any .decode()."
            )
        crc = (self.meta.get("crc32") or {}).get(member)
        if crc is not None and zlib.crc32(data) != crc:
            raise ShardError(f"sample {self.key!r} member .{member} is corrupt (CRC-32 mismatch)", key=self.key)
        return bytes(data)

    def attachments(self, extension: str) -> list[str]:
        return [m for m in self.members if m != extension and m not in record.TARGET_MEMBERS]


class WebDatasetDecoder:
    """See the module docstring. `weights`: for neural builds, as open_dataset's."""

    def __init__(self, build: str | Path, weights: str | None = None):
        location = as_location(build)
        if isinstance(location, Path) and location.name == MANIFEST_NAME:
            location = location.parent
        manifest = load_manifest(location)
        self.codec = codecs.from_manifest(manifest["codec"], weights=weights)
        self.extension = self.codec.extension
        self.modality = manifest["modality"]
        self._decoder = Decoder(self.codec, self.modality, None, None)

    def __call__(self, sample_or_extension: Any, data: bytes | None = None) -> Any:
        if data is None:
            return self.decode_sample(sample_or_extension)
        return self.decode_member(sample_or_extension, data)

    def decode_sample(self, sample: dict[str, Any]) -> dict[str, Any]:
        """webdataset's raw sample -> lossyds's sample dict (as the loader yields it)."""
        stored = _MemberRecord(sample, self.extension)
        decoded = self.codec.decode(stored.read(self.extension), stored.meta)
        return self._decoder.sample(stored, decoded)  # type: ignore[arg-type]

    def decode_member(self, extension: str, data: bytes) -> Any:
        """webdataset handler: the bitstream member of an image build -> uint8 [C, H, W]; None for other members."""
        if extension.lower().lstrip(".") != self.extension:  # webdataset passes ".jpg"
            return None
        if self.modality != "image":
            raise UsageError(
                f"{self.codec.name} audio needs each sample's KEY.json to decode to its source rate and length; "
                "use webdataset's .map(lossyds.webdataset_decoder(...)) instead of .decode(...)."
            )
        return self.codec.decode(bytes(data), {"channels": _channels(bytes(data))})


def _channels(data: bytes) -> int:
    """1 for a grayscale image file, else 3 (read from its header, as KEY.json records it);
    3 for bitstreams Pillow does not know (`.lsyn` carries its own channel count)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return 1 if image.mode in ("L", "1", "I;16", "I", "F") else 3
    except (UnidentifiedImageError, OSError, ValueError):
        return 3


def webdataset_decoder(build: str | Path, weights: str | None = None) -> WebDatasetDecoder:
    """A decoder for `webdataset.WebDataset(...).map(...)` (every codec) or `.decode(...)` (image codecs)."""
    return WebDatasetDecoder(build, weights=weights)
