"""Codec registry: the one map from codec name to implementation.

A new codec is one module in this package plus one line in `_REGISTRY`, or, from another
package, an entry point in the group `lossyds.codecs` (`NAME = "module:Class"`); in-process,
`register(NAME, "module:Class")`. Modules are imported lazily, so listing names costs nothing.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ..errors import UsageError
from ..registry import load_class
from .base import AudioCodec, Codec, ImageCodec

# name -> "module:Class" (modules relative to this package). The only place codec names live.
_REGISTRY: dict[str, str] = {
    "jpeg": "jpeg:JpegCodec",
    "webp": "webp:WebpCodec",
    "avif": "avif:AvifCodec",
    "png": "png:PngCodec",
    "mp3": "mp3:Mp3Codec",
    "opus": "opus:OpusCodec",
    "flac": "flac:FlacCodec",
    "bmshj2018-factorized": "compressai_models:Bmshj2018FactorizedCodec",
    "bmshj2018-hyperprior": "compressai_models:Bmshj2018HyperpriorCodec",
    "mbt2018-mean": "compressai_models:Mbt2018MeanCodec",
    "mbt2018": "compressai_models:Mbt2018Codec",
    "cheng2020-anchor": "compressai_models:Cheng2020AnchorCodec",
    "msillm": "msillm:MsIllmCodec",
    "encodec": "encodec_models:Encodec24Codec",
    "encodec-48khz": "encodec_models:Encodec48Codec",
}
ENTRY_POINT_GROUP = "lossyds.codecs"
_registered: dict[str, str] = {}  # register(): absolute "module:Class" targets


def register(name: str, target: str) -> None:
    """Add a codec from outside this package: `target` is "package.module:Class"."""
    if name in _REGISTRY:
        raise UsageError(f"codec name {name!r} is taken by a built-in codec.")
    _registered[name] = target


def _plugins() -> dict[str, str]:
    found = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_registered}


def available() -> list[str]:
    """Names of every registered codec (built in, entry points, register()), sorted."""
    return sorted({**_plugins(), **_REGISTRY})


def codec_class(name: str) -> type[Codec]:
    return load_class(name, _REGISTRY, __name__, _plugins(), "codec", available())


def get(name: str, **settings: Any) -> Codec:
    """A codec object ready to encode/decode, e.g. `get("opus", kbps=6)` or `get("jpeg", quality=5)`.

    `settings` are the codec's declared options (`codec_class(name).declared_options()`);
    None values are left out. Bad names, unknown options and impossible rates raise UsageError."""
    return codec_class(name)(**{key: value for key, value in settings.items() if value is not None})


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


__all__ = ["AudioCodec", "Codec", "ImageCodec", "available", "codec_class", "from_manifest", "get", "register"]
