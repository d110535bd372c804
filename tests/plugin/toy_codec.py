"""A codec from outside lossyds, registered through an entry point (tests/test_plugins.py).

`toy` stores 8-bit PCM: a real, if crude, lossy bitstream (a 4-byte rate header, then one
byte per sample). Nothing in lossyds names it."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import torch

from lossyds.codecs.base import AudioCodec
from lossyds.errors import CodecError
from lossyds.options import Option
from lossyds.types import SourceSample


class ToyCodec(AudioCodec):
    name = "toy"
    extension = "toy8"
    library = "numpy"
    options = (Option("gain", float, "Toy: scale applied before quantising to 8 bits.", default=1.0, span=(0.1, 10.0)),)

    def encode(self, sample: SourceSample) -> bytes:
        if sample.audio is None or sample.audio.shape[0] != 1:
            raise CodecError("toy encodes mono audio only")
        scaled = np.clip(np.round(sample.audio[0] * self.params["gain"] * 127), -127, 127).astype(np.int8)
        return struct.pack("<I", sample.sample_rate) + scaled.tobytes()

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        if len(data) < 4:
            raise CodecError("toy bitstream is truncated")
        values = np.frombuffer(data[4:], dtype=np.int8).astype(np.float32) / 127 / self.params["gain"]
        return torch.from_numpy(values.copy())[None]
