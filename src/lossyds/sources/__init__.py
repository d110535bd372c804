"""Source registry: the one map from dataset name to the reader of its on-disk layout.

Sources read and yield samples; they know nothing about codecs or tar. A new dataset
layout is one module here plus one line in `_REGISTRY`, or, from another package, an entry
point in the group `lossyds.sources` (`NAME = "module:Class"`). Each source's folder in the
repository's top-level `builders/` documents its corpus and holds a recipe.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .base import Source, SourceRef

_REGISTRY: dict[str, str] = {
    "sample": "sample:SampleSource",
    "imagenet": "imagenet:ImageNetSource",
    "cityscapes": "cityscapes:CityscapesSource",
    "librispeech": "librispeech:LibriSpeechSource",
    "musdb": "musdb:MusdbSource",
    "imagefolder": "folder:ImageFolderSource",
    "audiofolder": "folder:AudioFolderSource",
}
ENTRY_POINT_GROUP = "lossyds.sources"


def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    return sorted({**_plugins(), **_REGISTRY})


def source_class(name: str) -> type[Source]:
    if name in _REGISTRY:
        module_name, class_name = _REGISTRY[name].split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
    else:
        target = _plugins().get(name)
        if target is None:
            raise UsageError(f"Unknown dataset {name!r}; choose one of: {', '.join(available())}.")
        module_name, class_name = target.split(":")
        module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if cls.name != name:
        raise RuntimeError(f"registry maps {name!r} to {cls.__name__} whose name is {cls.name!r}")
    return cls


def get(name: str, *, root: str | Path | None, split: str | None, modality: str, **options: Any) -> Source:
    """The reader of dataset `name` at `root` (split `split`), feeding a codec of `modality`.

    `options` are the dataset's declared options (`source_class(name).declared_options()`)."""
    return source_class(name)(root=root, split=split, modality=modality, **options)


__all__ = ["Source", "SourceRef", "available", "get", "source_class"]
