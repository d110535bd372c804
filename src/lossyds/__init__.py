"""lossyds: precompressed datasets of real codec bitstreams, and a decoding loader that reports true bits per sample."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LOADING = (
    "LossyDataset",
    "DataLoader",
    "BitMeter",
    "collate_channels_last",
    "collate_padded",
    "make_loader",
    "webdataset_decoder",
)


def open_dataset(*args: Any, **kwargs: Any) -> Any:
    """See lossyds.load.open_dataset."""
    from .load import open_dataset as _open

    return _open(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LOADING:
        from . import load

        return getattr(load, name)
    if name in ("codecs", "hub", "sources", "record", "manifest"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = [
    "BitMeter",
    "DataLoader",
    "LossyDataset",
    "__version__",
    "collate_channels_last",
    "collate_padded",
    "make_loader",
    "open_dataset",
    "webdataset_decoder",
]
