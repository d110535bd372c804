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
    return codec_class(name)(**settings)


def from_manifest(codec_entry: dict[str, Any]) -> Codec:
    """Rebuild the codec a dataset was built with, from its manifest's "codec" entry."""
    return get(codec_entry["name"], **codec_entry.get("params", {}))


__all__ = ["AudioCodec", "Codec", "ImageCodec", "available", "codec_class", "from_manifest", "get"]
