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
from .base import AudioCodec, bracket_candidates

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class OpusCodec(AudioCodec):
    name = "opus"
    extension = "opus"
    library = "libopus (PyAV)"
    kbps_range = (6.0, 256.0)
    options = ("target_kbps",)  # per stream; libopus' own floor is 6 kbps in FFmpeg's wrapper

    def __init__(self, *, kbps: float | None = None, target_kbps: float | None = None, application: str = "audio", frame_ms: float = 20.0, vbr: str = "on", **rate: Any):
        from ..errors import UsageError

        if application not in ("audio", "voip", "lowdelay"):
            raise UsageError(f"opus application must be one of audio, voip, lowdelay (got {application!r}).")
        if target_kbps is not None:
            if kbps is not None:
                raise UsageError("opus: give --kbps (the encoder setting) or --target-kbps (the achieved rate), not both.")
            if isinstance(target_kbps, bool) or not isinstance(target_kbps, (int, float)) or not 3 <= target_kbps <= 256:
                raise UsageError(f"opus --target-kbps must be in 3..256 kbps (got {target_kbps!r}).")
            # The setting is searched per sample (see candidates); the Ogg container is counted.
            super(AudioCodec, self).__init__(target_kbps=float(target_kbps), application=application, frame_ms=frame_ms, vbr=vbr, **rate)
            return
        super().__init__(kbps=kbps, application=application, frame_ms=frame_ms, vbr=vbr, **rate)

    @classmethod
    def library_version(cls) -> str:
        return f"PyAV {av.__version__}"

    def describe_rate(self) -> str:
        if "target_kbps" in self.params:
            return f"target {self.params['target_kbps']:g} kbps achieved"
        return super().describe_rate()

    def encode_at(self, sample: SourceSample, bit_rate: int) -> bytes:
        """One encoding at an encoder setting of `bit_rate` bits per second."""
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
            bit_rate=bit_rate,
            codec_options={
                "application": self.params["application"],
                "frame_duration": str(self.params["frame_ms"]),
                "vbr": self.params["vbr"],
            },
        )

    def encode(self, sample: SourceSample) -> bytes:
        if "target_kbps" not in self.params:
            return self.encode_at(sample, int(round(self.params["kbps"] * 1000)))
        seconds = sample.audio.shape[1] / sample.sample_rate
        target = self.params["target_kbps"] * 1000 * seconds
        return min(self.candidates(sample), key=lambda c: abs(len(c[1]) * 8 - target))[1]

    def candidates(self, sample: SourceSample) -> list[tuple[dict[str, Any], bytes]]:
        """With --target-kbps: the two encoder settings (bits/s) whose whole files bracket the target."""
        if "target_kbps" not in self.params:
            return [({}, self.encode(sample))]
        if sample.audio is None or sample.sample_rate is None:
            raise CodecError(f"opus encodes audio; sample {sample.key!r} has none")
        target = self.params["target_kbps"] * 1000 * sample.audio.shape[1] / sample.sample_rate
        # libopus' setting range in bits per second; 100 b/s steps are finer than its own granularity
        return bracket_candidates(lambda bit_rate: self.encode_at(sample, bit_rate), 500, 256_000, target, resolution=100, setting="bit_rate")

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        audio, rate = pyav_decode(data, "ogg")
        return torch.from_numpy(np.ascontiguousarray(to_source_grid(audio, rate, meta)))
