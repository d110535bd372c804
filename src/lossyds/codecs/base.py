"""Codec base classes.

A codec turns one SourceSample into one bitstream (`encode`) and one bitstream back into
a tensor (`decode`): images as uint8 [C, H, W], audio as float32 [channels, frames] at
the source rate and length.

Every codec declares its options (`declared_options`): the rate options its base class
derives from `quality_range` / `kbps_range` / `kbps_choices`, plus its own `options`.
`Codec.__init__` checks what it is given against them; `resolve` applies the codec's
rules (a required rate, alternatives) and returns `params`, everything needed to rebuild
the codec (it goes to the manifest).

Neural codecs can also decode in two stages (`batched_synthesis = True`): `decode_latent`
does the entropy decoding (on CPU, where the bitstream was made, in a loader worker) and
`synthesize` runs the synthesis network on a batch of latents on any device.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import OptionError, UsageError
from ..options import Option, check_options
from ..types import Modality, SourceSample

RATE_OPTIONS = ("quality", "bpp", "kbps", "target_kbps")


def bracket_candidates(
    encode_at: Callable[[int], bytes],
    low: int,
    high: int,
    target_bits: float,
    resolution: int = 1,
    setting: str = "quality",
) -> list[tuple[dict[str, Any], bytes]]:
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
    uses_weights: ClassVar[bool] = False  # a learned codec: takes `weights`
    options: ClassVar[tuple[Option, ...]] = ()  # the codec's own options, beside its rate

    batched_synthesis: ClassVar[bool] = False  # decode_latent + synthesize are implemented
    # decode releases the GIL for nearly all its time, so decode threads in the training
    # process scale (the loader's recommended path); otherwise use DataLoader worker processes
    decodes_in_threads: ClassVar[bool] = False

    def __init__(self, **settings: Any):
        for name in RATE_OPTIONS:
            if self.lossless and settings.get(name) is not None:
                raise OptionError(f"{self.name} is lossless and takes no {{0}}.", name)
        checked = check_options(self.name, self.declared_options(), settings)
        # everything needed to rebuild this codec (goes to the manifest)
        self.params: dict[str, Any] = self.resolve(checked)

    @classmethod
    def rate_options(cls) -> tuple[Option, ...]:
        """The options that set the rate (declared by the modality's base class)."""
        return ()

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        """Every option this codec takes: its rate options, then its own."""
        return cls.rate_options() + cls.options

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """`params` from checked options: the rate as `resolve_rate` rules, then every own
        option, given or at its default, in declaration order."""
        params = self.resolve_rate({k: v for k, v in given.items() if k in RATE_OPTIONS})
        for option in self.options:
            params[option.name] = given.get(option.name, option.default)
        return params

    def resolve_rate(self, rate: dict[str, Any]) -> dict[str, Any]:
        return rate

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

    def decode_latent(self, data: bytes, meta: dict[str, Any]) -> Latent:
        """Stage 1 of a two-stage decode: entropy decoding only, on CPU (see module docstring)."""
        raise NotImplementedError(f"{self.name} decodes in one stage")

    # What output="latent" hands out (open_dataset): the codec's own entropy-decoded
    # representation, without synthesis. Codecs that have one set this and `latent_output`.
    latent_fields: ClassVar[tuple[str, ...]] = ()

    def latent_output(self, data: bytes, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The bitstream's entropy-decoded representation (see `latent_fields`), on CPU."""
        raise UsageError(
            f"{self.name} has no representation lossyds hands out without decoding: output='latent' is for the "
            "neural codecs (EnCodec codes, CompressAI and MS-ILLM latents) and JPEG (its DCT coefficients)."
        )

    def synthesize(self, latents: list[Latent], device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """Stage 2: the synthesis network on `latents` in batches (equal shapes stack), on
        `device`; returns what `decode` returns, one tensor per latent, on `device`."""
        raise NotImplementedError(f"{self.name} decodes in one stage")

    def rate_target(self) -> tuple[str, float] | None:
        """(unit, payload bits per unit) when the codec targets an achieved rate: ("pixels", bpp)
        for bpp, ("seconds", 1000 x kbps) for target_kbps; None for a fixed setting."""
        if "bpp" in self.params:
            return "pixels", float(self.params["bpp"])
        if "target_kbps" in self.params:
            return "seconds", 1000.0 * float(self.params["target_kbps"])
        return None

    def candidates(self, sample: SourceSample) -> list[tuple[dict[str, Any], bytes]]:
        """Encodings to choose from, as (per-sample settings, bitstream). One, unless the codec
        targets a rate (`bpp`): then the two settings that bracket the target, and the build
        picks per sample so that the dataset's running rate stays on target."""
        return [({}, self.encode(sample))]

    @classmethod
    def library_version(cls) -> str:
        return "unknown"

    def describe_rate(self) -> str:
        """The requested setting in words, e.g. 'quality 5', '6 kbps', 'lossless'."""
        return describe_setting(self.params)

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


def describe_setting(params: dict[str, Any]) -> str:
    """A codec's requested rate setting in words, from its params (also from a manifest)."""
    if "bpp" in params:
        return f"target {params['bpp']:g} bpp"
    if "target_kbps" in params:
        return f"target {params['target_kbps']:g} kbps achieved"
    if params.get("quality") is not None:
        return f"quality {params['quality']}"
    if params.get("kbps") is not None:
        return f"{params['kbps']:g} kbps"
    return "lossless"


class ImageCodec(Codec):
    modality: ClassVar[Modality] = "image"
    quality_range: ClassVar[tuple[int, int] | None] = (0, 100)  # None: lossless
    takes_bpp: ClassVar[bool] = True  # quality searched per image to hit a bpp target

    @classmethod
    def rate_options(cls) -> tuple[Option, ...]:
        if cls.quality_range is None:
            return ()
        quality = Option("quality", int, "Image codec quality (higher is better).", span=cls.quality_range)
        if not cls.takes_bpp:
            return (quality,)
        bpp = Option(
            "bpp", float, "Target bits per pixel: quality chosen per image so the mean hits it.", span=(0.0, 24.0)
        )
        return quality, bpp

    def resolve_rate(self, rate: dict[str, Any]) -> dict[str, Any]:
        if self.quality_range is None:
            return {}
        if "bpp" in rate:
            if "quality" in rate:
                raise OptionError(f"{self.name}: give {{0}} or {{1}}, not both.", "quality", "bpp")
            if rate["bpp"] <= 0:
                raise OptionError(
                    f"{self.name} {{0}} must be a number of bits per pixel in (0, 24] (got {rate['bpp']!r}).", "bpp"
                )
            return {"bpp": rate["bpp"]}
        if "quality" not in rate:
            low, high = self.quality_range
            raise OptionError(f"{self.name} needs {{0}}, an integer in {low}..{high}.", "quality")
        return {"quality": rate["quality"]}


class AudioCodec(Codec):
    modality: ClassVar[Modality] = "audio"
    kbps_range: ClassVar[tuple[float, float] | None] = None  # None (and no choices): lossless
    kbps_choices: ClassVar[tuple[float, ...] | None] = None  # the only rates the codec offers

    @classmethod
    def rate_options(cls) -> tuple[Option, ...]:
        if cls.kbps_choices is not None:
            return (Option("kbps", float, "Audio bit rate in kilobits per second.", choices=cls.kbps_choices),)
        if cls.kbps_range is not None:
            return (Option("kbps", float, "Audio bit rate in kilobits per second.", span=cls.kbps_range),)
        return ()

    def resolve_rate(self, rate: dict[str, Any]) -> dict[str, Any]:
        if not self.rate_options():
            return {}
        if "kbps" not in rate:
            raise OptionError(f"{self.name} needs {{0}}, {self.rate_options()[0].describe()} kbps.", "kbps")
        return {"kbps": rate["kbps"]}
