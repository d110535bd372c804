"""Codec registry: the one map from codec name to implementation.

A new codec is one module in this package plus one line in `_REGISTRY`.
Modules are imported lazily, so listing names costs nothing.
"""
from __future__ import annotations

import importlib
from typing import Any

from ..errors import UsageError
from .base import AudioCodec, Codec, ImageCodec

# name -> "module:Class". The only place codec names live.
_REGISTRY: dict[str, str] = {
    "jpeg": "jpeg:JpegCodec",
    "webp": "webp:WebpCodec",
    "avif": "avif:AvifCodec",
    "png": "png:PngCodec",
    "mp3": "mp3:Mp3Codec",
    "opus": "opus:OpusCodec",
    "flac": "flac:FlacCodec",
    "bmshj2018-factorized": "_compressai:Bmshj2018FactorizedCodec",
    "bmshj2018-hyperprior": "_compressai:Bmshj2018HyperpriorCodec",
    "mbt2018-mean": "_compressai:Mbt2018MeanCodec",
    "mbt2018": "_compressai:Mbt2018Codec",
    "cheng2020-anchor": "_compressai:Cheng2020AnchorCodec",
    "msillm": "_msillm:MsIllmCodec",
    "encodec": "_encodec:Encodec24Codec",
    "encodec-48khz": "_encodec:Encodec48Codec",
}


def available() -> list[str]:
    """Names of every registered codec, sorted."""
    return sorted(_REGISTRY)


def codec_class(name: str) -> type[Codec]:
    """The class registered under `name`; UsageError naming the valid choices otherwise."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"Unknown codec {name!r}; choose one of: {', '.join(available())}."
        ) from None
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls = getattr(module, class_name)
    if cls.name != name:  # keeps the registry and the classes from drifting apart
        raise RuntimeError(f"registry maps {name!r} to {cls.__name__} whose name is {cls.name!r}")
    return cls


def get(name: str, **settings: Any) -> Codec:
    """A codec object ready to encode/decode, e.g. `get("opus", kbps=6)` or `get("jpeg", quality=5)`.

    Rate settings: `quality` (image codecs), `kbps` (audio codecs); codec-specific
    parameters may follow. Bad names or impossible rates raise UsageError.
    """
    cls = codec_class(name)
    if settings.get("weights") is not None and not getattr(cls, "uses_weights", False):
        raise UsageError(f"{name} is not a learned codec and takes no --weights.")
    for option, flag, owner in (("entropy_lm", "--entropy-lm", "EnCodec"), ("target_kbps", "--target-kbps", "Opus")):
        if settings.get(option) not in (None, False) and option not in getattr(cls, "options", ()):
            raise UsageError(f"{name} takes no {flag} ({owner} only).")
    settings = {k: v for k, v in settings.items() if not (k in ("weights", "entropy_lm", "target_kbps") and v in (None, False))}
    return cls(**settings)


def from_manifest(codec_entry: dict[str, Any], weights: str | None = None) -> Codec:
    """Rebuild the codec a dataset was built with, from its manifest's "codec" entry.

    Neural codecs: `weights` overrides the recorded weights spec (e.g. a local checkpoint
    path); either way the weights must have the fingerprint the manifest records."""
    params = dict(codec_entry.get("params", {}))
    if weights is not None:
        params["weights"] = weights
    codec = get(codec_entry["name"], **params)
    recorded = codec_entry.get("weights")
    if recorded:
        codec.check_weights(recorded)  # type: ignore[attr-defined]
    return codec


__all__ = ["AudioCodec", "Codec", "ImageCodec", "available", "codec_class", "from_manifest", "get"]
