"""lossyds: precompressed datasets of real codec bitstreams, and a decoding loader that reports true bits per sample."""
from __future__ import annotations

__version__ = "0.1.0"


def open_dataset(*args, **kwargs):
    """See lossyds.loader.open_dataset."""
    from .loader import open_dataset as _open

    return _open(*args, **kwargs)


def __getattr__(name: str):
    if name in ("LossyDataset", "DataLoader", "BitMeter", "collate_channels_last", "make_loader"):
        from . import loader

        return getattr(loader, name)
    if name in ("codecs", "hub", "builders"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = ["__version__", "open_dataset", "make_loader", "LossyDataset", "DataLoader", "BitMeter", "collate_channels_last"]
