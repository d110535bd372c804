"""Source registry: the one map from dataset name to the reader of its on-disk layout.

Sources read and yield samples; they know nothing about codecs or tar. A new dataset
layout is one module here plus one line in `_REGISTRY`, or, from another package, an entry
point in the group `lossyds.sources` (`NAME = "module:Class"`). Each source's folder in the
repository's top-level `builders/` documents its corpus and holds a recipe.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..registry import load_class
from .base import Source, SourceRef

_REGISTRY: dict[str, str] = {
    "sample": "sample:SampleSource",
    "imagenet": "imagenet:ImageNetSource",
    "cityscapes": "cityscapes:CityscapesSource",
    "librispeech": "librispeech:LibriSpeechSource",
    "musdb": "musdb:MusdbSource",
    "imagefolder": "folder:ImageFolderSource",
    "audiofolder": "folder:AudioFolderSource",
    "hf": "huggingface:HuggingFaceSource",  # --dataset hf:NAME_OR_PATH
}
HF_PREFIX = "hf:"
ENTRY_POINT_GROUP = "lossyds.sources"


def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    return sorted({**_plugins(), **_REGISTRY})


def source_class(name: str) -> type[Source]:
    if name.startswith(HF_PREFIX):
        name = "hf"
    return load_class(name, _REGISTRY, __name__, _plugins(), "dataset", available())


def get(name: str, *, root: str | Path | None, split: str | None, modality: str, **options: Any) -> Source:
    """The reader of dataset `name` at `root` (split `split`), feeding a codec of `modality`.

    `options` are the dataset's declared options (`source_class(name).declared_options()`).
    `hf:NAME_OR_PATH` is a Hugging Face dataset (lossyds.sources.huggingface)."""
    if name == "hf" or name.startswith(HF_PREFIX):
        options["path"] = name[len(HF_PREFIX) :]
    return source_class(name)(root=root, split=split, modality=modality, **options)


__all__ = ["Source", "SourceRef", "available", "get", "source_class"]
