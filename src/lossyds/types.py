"""The decoded source sample passed from a source reader to the codec and the sample record.

Units: image arrays are uint8 [H, W, C] with C in {1, 3}; audio arrays are float32
[channels, frames] in [-1, 1] at `sample_rate` frames per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Modality = Literal["image", "audio"]


@dataclass
class SourceSample:
    """One decoded source sample, as a source reader yields it (knows nothing of codecs or tar)."""

    key: str
    image: np.ndarray | None = None  # uint8 [H, W, C], C in {1, 3}
    audio: np.ndarray | None = None  # float32 [channels, frames]
    sample_rate: int | None = None  # audio frames per second
    audio_bit_depth: int | None = None  # bits per sample of the source PCM (16, 24, 32), None if unknown
    targets: dict[str, Any] = field(default_factory=dict)  # JSON-able targets: label, text, speaker_id, ...
    attachments: dict[str, bytes] = field(default_factory=dict)  # lossless members: "mask.png" -> file bytes
    reference_audio: dict[str, np.ndarray] = field(default_factory=dict)  # stored as FLAC: "stems.drums" -> [C, T]
    extra_audio: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # signals the codec also encodes: "stems.drums" -> [C, T]
    source_bytes: int = 0  # bytes of the source file(s) as read
    source_sha256: str = ""  # hex sha256 of the source bytes as read
    source_path: str = ""  # path relative to the dataset root

    @property
    def modality(self) -> Modality:
        return "image" if self.image is not None else "audio"

    def raw_bits(self) -> int:
        """Bits of the uncompressed signal: 8 per pixel per channel, or 16 per audio sample per channel."""
        if self.image is not None:
            return int(self.image.size) * 8
        assert self.audio is not None
        return int(self.audio.size) * 16
