"""Opus in Ogg (libopus through PyAV), exact bit-rate control.

libopus takes 8/12/16/24/48 kHz input; other rates are resampled to 48 kHz before
encoding (never relabelled). Decoding always yields 48 kHz; the result is resampled
back to the source rate and cut to the source length (pre-skip and end trim are
applied by FFmpeg from the Ogg stream).
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

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class OpusCodec(AudioCodec):
    name = "opus"
    extension = "opus"
    library = "libopus (PyAV)"
    kbps_range = (6.0, 256.0)  # per stream; libopus' own floor is 6 kbps in FFmpeg's wrapper

    def __init__(self, *, kbps: float | None = None, application: str = "audio", frame_ms: float = 20.0, vbr: str = "on", **rate: Any):
        if application not in ("audio", "voip", "lowdelay"):
            from ..errors import UsageError

            raise UsageError(f"opus application must be one of audio, voip, lowdelay (got {application!r}).")
        super().__init__(kbps=kbps, application=application, frame_ms=frame_ms, vbr=vbr, **rate)

    @classmethod
    def library_version(cls) -> str:
        return f"PyAV {av.__version__}"

    def encode(self, sample: SourceSample) -> bytes:
        if sample.audio is None or sample.sample_rate is None:
            raise CodecError(f"opus encodes audio; sample {sample.key!r} has none")
        audio, rate = sample.audio, sample.sample_rate
        if rate not in OPUS_RATES:
            audio, rate = resample(audio, rate, 48000), 48000
        return pyav_encode(
            audio,
            rate,
            container_format="ogg",
            codec_name="libopus",
            bit_rate=int(round(self.params["kbps"] * 1000)),
            codec_options={
                "application": self.params["application"],
                "frame_duration": str(self.params["frame_ms"]),
                "vbr": self.params["vbr"],
            },
        )

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        audio, rate = pyav_decode(data, "ogg")
        return torch.from_numpy(np.ascontiguousarray(to_source_grid(audio, rate, meta)))
