"""Opus in Ogg (libopus through PyAV), exact bit-rate control.

libopus takes 8/12/16/24/48 kHz input; other rates are resampled to 48 kHz before
encoding. Decoding always yields 48 kHz; the result is resampled back to the source rate
and cut to the source length (pre-skip and end trim are applied by FFmpeg from the Ogg
stream). `rate_conversion=relabel` reproduces a study that instead handed such audio to
the encoder labelled as 48 kHz: its samples unchanged (44,100 a second of input kept as
48,000, so the encoder sees it 48000/44100 higher and faster), and on decode labelled
back to the source rate.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import torch

from ..errors import CodecError, OptionError
from ..options import Option
from ..types import SourceSample
from ._audio import pyav_decode, pyav_encode, resample, to_source_grid
from .base import AudioCodec, bracket_candidates

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class OpusCodec(AudioCodec):
    name = "opus"
    extension = "opus"
    library = "libopus (PyAV)"
    kbps_range = (6.0, 256.0)  # libopus' own floor is 6 kbps in FFmpeg's wrapper
    options = (
        Option("application", str, "Opus encoder tuning.", default="audio", choices=("audio", "voip", "lowdelay")),
        Option(
            "frame_ms",
            float,
            "Opus frame duration in milliseconds.",
            default=20.0,
            choices=(2.5, 5.0, 10.0, 20.0, 40.0, 60.0),
        ),
        Option("vbr", str, "Opus rate control.", default="on", choices=("on", "off", "constrained")),
        Option(
            "rate_conversion",
            str,
            "Opus: audio at a rate libopus does not take (not 8/12/16/24/48 kHz) is resampled to 48 kHz "
            "(default), or relabelled as 48 kHz: its samples handed over unchanged, and labelled back on decode.",
            choices=("resample", "relabel"),
        ),
    )

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        params = super().resolve(given)
        if params.get("rate_conversion") is None:  # unset: builds record what they always recorded
            del params["rate_conversion"]
        return params

    @property
    def relabels(self) -> bool:
        return self.params.get("rate_conversion") == "relabel"

    @classmethod
    def rate_options(cls) -> tuple[Option, ...]:
        target = Option(
            "target_kbps",
            float,
            "Opus: target achieved kbps (whole Ogg files); the encoder setting is chosen per sample.",
            span=(3.0, 256.0),
        )
        return (*super().rate_options(), target)

    def resolve_rate(self, rate: dict[str, Any]) -> dict[str, Any]:
        if "target_kbps" in rate:
            if "kbps" in rate:
                raise OptionError(
                    "opus: give {0} (the encoder setting) or {1} (the achieved rate), not both.", "kbps", "target_kbps"
                )
            # The setting is searched per sample (see candidates); the Ogg container is counted.
            return {"target_kbps": rate["target_kbps"]}
        return super().resolve_rate(rate)

    @classmethod
    def library_version(cls) -> str:
        return f"PyAV {av.__version__}"

    def encode_at(self, sample: SourceSample, bit_rate: int) -> bytes:
        """One encoding at an encoder setting of `bit_rate` bits per second."""
        if sample.audio is None or sample.sample_rate is None:
            raise CodecError(f"opus encodes audio; sample {sample.key!r} has none")
        audio, rate = sample.audio, sample.sample_rate
        if rate not in OPUS_RATES:
            audio, rate = (audio if self.relabels else resample(audio, rate, 48000)), 48000
        return pyav_encode(
            audio,
            rate,
            muxer="ogg",
            encoder="libopus",
            bit_rate=bit_rate,
            encoder_options={
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
        return bracket_candidates(
            lambda bit_rate: self.encode_at(sample, bit_rate), 500, 256_000, target, resolution=100, setting="bit_rate"
        )

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        audio, rate = pyav_decode(data, "ogg")
        if self.relabels and int(meta["sample_rate"]) not in OPUS_RATES:
            rate = int(meta["sample_rate"])  # the 48 kHz samples are the source's samples, relabelled back
        return torch.from_numpy(np.ascontiguousarray(to_source_grid(audio, rate, meta)))
