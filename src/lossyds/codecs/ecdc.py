"""The `.ecdc` bitstream file of EnCodec, in the `encodec` package's own format.

Layout (as encodec.binary and encodec.compress write it):
    magic b"ECDC" | format version (1 byte, 0) | metadata length (4 bytes, big-endian)
    | metadata: UTF-8 JSON object {"m": model name, "al": audio length in model-rate frames,
      "nc": number of codebooks, "lm": whether the codes are arithmetic-coded with the LM}
    | per frame (one per segment of the model; one for a model without segments):
      the frame's scale (big-endian float32, only for models that normalize), then its
      codes: bit-packed (`bits` bits each, least significant first, step-major, padded to a
      whole byte) or, with the LM, an arithmetic-coded stream that the LM's decoder reads.

Reading is kept apart from the codec so that the format's checks sit in one place: readers
raise CodecError on a wrong magic, an unknown version, unreadable metadata and a file that
ends before the frames it announces.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CodecError

MAGIC = b"ECDC"
VERSION = 0
_HEADER = struct.Struct("!4sBI")  # magic, version, metadata length
_SCALE = struct.Struct("!f")


@dataclass
class EcdcHeader:
    model: str  # encodec's model name, e.g. "encodec_24khz"
    length: int  # audio length in model-rate frames
    codebooks: int
    use_lm: bool  # codes arithmetic-coded with the LM (else bit-packed)


def header_bytes(metadata: dict[str, Any]) -> bytes:
    """The header encodec.binary.write_ecdc_header writes for `metadata` (same JSON spelling)."""
    meta = json.dumps(metadata).encode("utf-8")
    return _HEADER.pack(MAGIC, VERSION, len(meta)) + meta


def _integer(metadata: dict[str, Any], field: str, minimum: int) -> int:
    value = metadata.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise CodecError(f".ecdc bitstream header holds no valid {field!r} (got {value!r})")
    return value


class EcdcReader:
    """Reads one `.ecdc` file front to back: the header on construction, then each frame's
    scale and codes in order. `handle` is the file positioned after what was read (the LM's
    arithmetic decoder reads coded frames from it)."""

    def __init__(self, data: bytes):
        self.size = len(data)
        self.handle = io.BytesIO(data)
        self.header = self._read_header()

    def _take(self, count: int, what: str) -> bytes:
        position = self.handle.tell()
        chunk = self.handle.read(count)
        if len(chunk) != count:
            raise CodecError(
                f".ecdc bitstream is truncated ({what} needs {count} bytes at offset {position} of {self.size})"
            )
        return chunk

    def _read_header(self) -> EcdcHeader:
        magic = self.handle.getvalue()[:4]
        if len(magic) == 4 and magic != MAGIC:  # checked first: a short file of another kind is not "truncated"
            raise CodecError(f"not an .ecdc bitstream (magic {magic!r}, expected {MAGIC!r})")
        magic, version, meta_size = _HEADER.unpack(self._take(_HEADER.size, "its header"))
        if version != VERSION:
            raise CodecError(
                f".ecdc bitstream format version {version} is not supported (this lossyds reads {VERSION})"
            )
        try:
            metadata = json.loads(self._take(meta_size, "its header metadata").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CodecError(f".ecdc bitstream header metadata is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise CodecError(f".ecdc bitstream header metadata is not a JSON object (got {type(metadata).__name__})")
        model = metadata.get("m")
        if not isinstance(model, str):
            raise CodecError(f".ecdc bitstream header names no model (got {model!r})")
        return EcdcHeader(model, _integer(metadata, "al", 0), _integer(metadata, "nc", 1), bool(metadata.get("lm")))

    def scale(self) -> float:
        """The next frame's scale (models that normalize store one before each frame's codes)."""
        return _SCALE.unpack(self._take(_SCALE.size, "a frame's scale"))[0]

    def packed_codes(self, bits: int, steps: int, codebooks: int) -> np.ndarray:
        """The next frame's bit-packed codes as int64 [steps, codebooks] (step-major, as stored)."""
        count = steps * codebooks
        packed = self._take((count * bits + 7) // 8, f"a frame of {count} {bits}-bit codes")
        unpacked = np.unpackbits(np.frombuffer(packed, np.uint8), count=count * bits, bitorder="little")
        weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
        return (unpacked.reshape(count, bits).astype(np.int64) @ weights).reshape(steps, codebooks)
