"""FLAC (libFLAC through soundfile): the lossless audio reference.

Sources of up to 16 bits are stored as 16-bit FLAC, deeper, float and unknown ones as 24-bit. FLAC holds integer
PCM in [-1, 1), so every encode is decoded again and compared with its source: integer
PCM sources of up to 24 bits must come back exactly, float and 32-bit sources to within one
24-bit step (2^-23 of full scale: rounding, and a peak of exactly 1.0 held as the largest code). A sample that
would not (a float source peaking beyond +-1, which would clip) is
refused with the reason, so its key is recorded as skipped and `lossless` stays true.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile
import torch

from ..errors import CodecError
from ..sources.base import libsndfile_reason
from ..types import SourceSample
from .base import AudioCodec

FLOAT_TOLERANCE = 2.0**-23  # one 24-bit step of full scale: what a float source may lose in rounding


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
        depth = sample.audio_bit_depth
        subtype = "PCM_16" if depth is not None and depth <= 16 else "PCM_24"
        buffer = io.BytesIO()
        soundfile.write(buffer, sample.audio.T, sample.sample_rate, format="FLAC", subtype=subtype)
        data = buffer.getvalue()
        self._check_exact(sample, data)
        return data

    def _check_exact(self, sample: SourceSample, data: bytes) -> None:
        assert sample.audio is not None
        decoded, _rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        error = float(np.max(np.abs(decoded.T - sample.audio))) if sample.audio.size else 0.0
        integer_source = sample.audio_bit_depth is not None and sample.audio_bit_depth <= 24
        if error == 0.0 or (not integer_source and error <= FLOAT_TOLERANCE):
            return
        peak = float(np.max(np.abs(sample.audio)))
        if peak > 1.0:
            raise CodecError(
                f"flac stores PCM in [-1, 1] and this source peaks at {peak:.3g}: it would clip (error {error:.3g}), "
                "so it is not stored (scale it into range to keep it)"
            )
        raise CodecError(
            f"flac cannot store this {sample.audio_bit_depth or 'unknown'}-bit source exactly (24-bit PCM at most; "
            f"error {error:.3g}), so it is not stored"
        )

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        try:
            audio, _rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise CodecError(f"libsndfile: {libsndfile_reason(exc)}") from exc
        return torch.from_numpy(np.ascontiguousarray(audio.T))
