"""Dataset builder registry: the one map from dataset name to the reader of its on-disk layout.

Builders read and yield samples; they know nothing about codecs or tar. A new
dataset layout is one module here plus one line in `_REGISTRY`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .base import Builder, Record

_REGISTRY: dict[str, str] = {
    "sample": "sample:SampleBuilder",
    "imagenet": "imagenet:ImageNetBuilder",
    "cityscapes": "cityscapes:CityscapesBuilder",
    "librispeech": "librispeech:LibriSpeechBuilder",
    "musdb": "musdb:MusdbBuilder",
    "imagefolder": "folder:ImageFolderBuilder",
    "audiofolder": "folder:AudioFolderBuilder",
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def builder_class(name: str) -> type[Builder]:
    try:
        module_name, class_name = _REGISTRY[name].split(":")
    except KeyError:
        raise UsageError(f"Unknown dataset {name!r}; choose one of: {', '.join(available())}.") from None
    cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    if cls.name != name:
        raise RuntimeError(f"registry maps {name!r} to {cls.__name__} whose name is {cls.name!r}")
    return cls


def get(name: str, *, root: str | Path | None, split: str | None, modality: str, **options: Any) -> Builder:
    """A builder for dataset `name` at `root` (split `split`), feeding a codec of `modality`.

    `options` are dataset-specific (MUSDB: chunk_seconds, compress_stems)."""
    return builder_class(name)(root=root, split=split, modality=modality, **options)


__all__ = ["Builder", "Record", "available", "builder_class", "get"]
