"""MP3 (LAME through PyAV), constant bit rate.

LAME only offers the bit rates of the MPEG layer for the sample rate: at 32-48 kHz
the floor is 32 kbps, at 16-24 kHz 8 kbps. A lower request is raised by LAME, and
the build reports the achieved rate. Sample rates MP3 lacks are resampled to 48 kHz.
FFmpeg reads the LAME tag and removes encoder delay and padding, so decoded audio
is sample-aligned with the source.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import torch

from ..errors import CodecError
from ..types import SourceSample
from ._audio import pyav_decode, pyav_encode, resample, to_source_grid
from .base import AudioCodec

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)


class Mp3Codec(AudioCodec):
    name = "mp3"
    extension = "mp3"
    library = "LAME (PyAV)"
    kbps_choices = MP3_KBPS

    @classmethod
    def library_version(cls) -> str:
        return f"PyAV {av.__version__}"

    def encode(self, sample: SourceSample) -> bytes:
        if sample.audio is None or sample.sample_rate is None:
            raise CodecError(f"mp3 encodes audio; sample {sample.key!r} has none")
        audio, rate = sample.audio, sample.sample_rate
        if rate not in MP3_RATES:
            audio, rate = resample(audio, rate, 48000), 48000
        return pyav_encode(
            audio,
            rate,
            muxer="mp3",
            encoder="libmp3lame",
            bit_rate=int(self.params["kbps"] * 1000),
            muxer_options={"id3v2_version": "0", "write_xing": "1"},
        )

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        audio, rate = pyav_decode(data, "mp3")
        return torch.from_numpy(np.ascontiguousarray(to_source_grid(audio, rate, meta)))
