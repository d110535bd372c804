"""Codec base classes.

A codec turns one SourceSample into one bitstream (`encode`) and one bitstream
back into a tensor (`decode`): images as uint8 [C, H, W], audio as float32
[channels, frames] at the source rate and length.

Neural codecs can also decode in two stages (`batched_synthesis = True`): `decode_latent`
does the entropy decoding (on CPU, where the bitstream was made, in a loader worker) and
`synthesize` runs the synthesis network on a batch of latents on any device.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import UsageError
from ..types import Modality, SourceSample


def bracket_candidates(encode_at, low: int, high: int, target_bits: float, resolution: int = 1, setting: str = "quality") -> list[tuple[dict[str, Any], bytes]]:
    """The encodings at the two settings that bracket `target_bits` (size grows with the setting).

    Binary search over integer settings low..high, stopping when the bracket is
    `resolution` wide; a target outside the range returns the nearest end alone."""
    cache: dict[int, bytes] = {}

    def at(value: int) -> bytes:
        if value not in cache:
            cache[value] = encode_at(value)
        return cache[value]

    if len(at(low)) * 8 >= target_bits:
        return [({setting: low}, at(low))]
    if len(at(high)) * 8 <= target_bits:
        return [({setting: high}, at(high))]
    while high - low > resolution:
        middle = (low + high) // 2
        if len(at(middle)) * 8 <= target_bits:
            low = middle
        else:
            high = middle
    return [({setting: low}, at(low)), ({setting: high}, at(high))]


@dataclass
class Latent:
    """One entropy-decoded sample waiting for its codec's synthesis network.

    `parts`: the synthesis inputs, as CPU tensors (their layout is the codec's own);
    `finish`: what synthesis needs to give the sample its final size, rate and length.
    Pickles cheaply (DataLoader workers hand it to the main process)."""

    codec: str
    parts: list[Any]
    finish: dict[str, Any] = field(default_factory=dict)


class Codec(abc.ABC):
    name: ClassVar[str]
    modality: ClassVar[Modality]
    extension: ClassVar[str]  # shard member extension of the bitstream, without dot
    library: ClassVar[str]  # the library that produces the bitstream
    lossless: ClassVar[bool] = False

    def __init__(self, **params: Any):
        self.params: dict[str, Any] = params  # everything needed to rebuild this codec (goes to the manifest)

    @abc.abstractmethod
    def encode(self, sample: SourceSample) -> bytes:
        """The complete bitstream of one sample: the bytes you must store to decode it."""

    @abc.abstractmethod
    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        """Decode a bitstream. `meta` is the sample's stored metadata (source size, rate, length)."""

    def decode_many(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[torch.Tensor | Exception]:
        """Decode several (bitstream, meta) pairs: one result per item, in order, each the
        tensor `decode` returns or the exception it raised (a bad bitstream spoils no other).
        The loader's decode threads call this once per chunk of samples. Here: `decode` one
        by one; codecs with a native batch path override it."""
        results: list[torch.Tensor | Exception] = []
        for data, meta in items:
            try:
                results.append(self.decode(data, meta))
            except Exception as exc:  # handed back to the caller, which names the sample
                results.append(exc)
        return results

    batched_synthesis: ClassVar[bool] = False  # decode_latent + synthesize are implemented
    # decode releases the GIL for nearly all its time, so decode threads in the training
    # process scale (the loader's recommended path); otherwise use DataLoader worker processes
    decodes_in_threads: ClassVar[bool] = False

    def decode_latent(self, data: bytes, meta: dict[str, Any]) -> Latent:
        """Stage 1 of a two-stage decode: entropy decoding only, on CPU (see module docstring)."""
        raise NotImplementedError(f"{self.name} decodes in one stage")

    def synthesize(self, latents: list[Latent], device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """Stage 2: the synthesis network on `latents` in batches (equal shapes stack), on
        `device`; returns what `decode` returns, one tensor per latent, on `device`."""
        raise NotImplementedError(f"{self.name} decodes in one stage")

    def rate_target(self) -> tuple[str, float] | None:
        """(unit, payload bits per unit) when the codec targets an achieved rate: ("pixels", bpp)
        for --bpp, ("seconds", 1000 x kbps) for --target-kbps; None for a fixed setting."""
        if "bpp" in self.params:
            return "pixels", float(self.params["bpp"])
        if "target_kbps" in self.params:
            return "seconds", 1000.0 * float(self.params["target_kbps"])
        return None

    def candidates(self, sample: SourceSample) -> list[tuple[dict[str, Any], bytes]]:
        """Encodings to choose from, as (per-sample settings, bitstream). One, unless the codec
        targets a rate (`--bpp`): then the two settings that bracket the target, and the build
        picks per sample so that the dataset's running rate stays on target."""
        return [({}, self.encode(sample))]

    @classmethod
    def library_version(cls) -> str:
        return "unknown"

    def describe_rate(self) -> str:
        """Requested setting in words, e.g. 'quality 5' or '6 kbps'."""
        return ", ".join(f"{k}={v}" for k, v in self.params.items())

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": dict(self.params),
            "extension": self.extension,
            "library": self.library,
            "library_version": self.library_version(),
            "weights": None,
            "lossless": self.lossless,
        }


class ImageCodec(Codec):
    modality: ClassVar[Modality] = "image"
    quality_range: ClassVar[tuple[int, int] | None] = (0, 100)
    default_quality: ClassVar[int | None] = None

    def __init__(self, *, quality: int | None = None, kbps: float | None = None, bpp: float | None = None, **params: Any):
        if kbps is not None:
            raise UsageError(f"{self.name} is an image codec: give --quality, not --kbps.")
        if bpp is not None:
            if self.quality_range is None:
                raise UsageError(f"{self.name} is lossless and takes no --bpp.")
            if quality is not None:
                raise UsageError(f"{self.name}: give --quality or --bpp, not both.")
            if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not 0 < bpp <= 24:
                raise UsageError(f"{self.name} --bpp must be a number of bits per pixel in (0, 24] (got {bpp!r}).")
            super().__init__(bpp=float(bpp), **params)
            return
        if self.quality_range is None:
            if quality is not None:
                raise UsageError(f"{self.name} is lossless and takes no --quality.")
        else:
            if quality is None:
                quality = self.default_quality
            if quality is None:
                lo, hi = self.quality_range
                raise UsageError(f"{self.name} needs --quality, an integer in {lo}..{hi}.")
            lo, hi = self.quality_range
            if not isinstance(quality, int) or isinstance(quality, bool) or not lo <= quality <= hi:
                raise UsageError(f"{self.name} quality must be an integer in {lo}..{hi} (got {quality!r}).")
            params = {"quality": quality, **params}
        super().__init__(**params)

    def describe_rate(self) -> str:
        if "bpp" in self.params:
            return f"target {self.params['bpp']:g} bpp"
        q = self.params.get("quality")
        return "lossless" if q is None else f"quality {q}"


class AudioCodec(Codec):
    modality: ClassVar[Modality] = "audio"
    kbps_range: ClassVar[tuple[float, float] | None] = None
    default_kbps: ClassVar[float | None] = None

    def __init__(self, *, kbps: float | None = None, quality: int | None = None, bpp: float | None = None, **params: Any):
        if quality is not None or bpp is not None:
            flag = "--quality" if quality is not None else "--bpp"
            raise UsageError(f"{self.name} is an audio codec: give --kbps, not {flag}.")
        if self.kbps_range is None:
            if kbps is not None:
                raise UsageError(f"{self.name} is lossless and takes no --kbps.")
        else:
            if kbps is None:
                kbps = self.default_kbps
            lo, hi = self.kbps_range
            if kbps is None:
                raise UsageError(f"{self.name} needs --kbps, a bit rate in {lo:g}..{hi:g} kbps.")
            if isinstance(kbps, bool) or not isinstance(kbps, (int, float)) or not lo <= kbps <= hi:
                raise UsageError(f"{self.name} bit rate must be in {lo:g}..{hi:g} kbps (got {kbps!r}).")
            self.check_kbps(float(kbps))
            params = {"kbps": float(kbps), **params}
        super().__init__(**params)

    def check_kbps(self, kbps: float) -> None:
        """Raise UsageError if `kbps` is not a rate this codec offers (beyond the range check)."""

    def describe_rate(self) -> str:
        k = self.params.get("kbps")
        return "lossless" if k is None else f"{k:g} kbps"
