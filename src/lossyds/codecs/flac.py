"""FLAC (libFLAC through soundfile): the lossless audio reference.

16-bit sources are stored as 16-bit FLAC, deeper sources as 24-bit.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile
import torch

from ..errors import CodecError
from ..types import SourceSample
from .base import AudioCodec


class FlacCodec(AudioCodec):
    name = "flac"
    extension = "flac"
    library = "libFLAC (soundfile)"
    lossless = True

    @classmethod
    def library_version(cls) -> str:
        return f"soundfile {soundfile.__version__}, {soundfile.__libsndfile_version__}"

    def encode(self, sample: SourceSample) -> bytes:
        if sample.audio is None or sample.sample_rate is None:
            raise CodecError(f"flac encodes audio; sample {sample.key!r} has none")
        subtype = "PCM_16" if (sample.audio_bit_depth or 16) <= 16 else "PCM_24"
        buffer = io.BytesIO()
        soundfile.write(buffer, sample.audio.T, sample.sample_rate, format="FLAC", subtype=subtype)
        return buffer.getvalue()

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        try:
            audio, _rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise CodecError(f"cannot decode flac bitstream: {exc}") from exc
        return torch.from_numpy(np.ascontiguousarray(audio.T))
