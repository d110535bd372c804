"""Loading builds: `open_dataset` (a torch IterableDataset of decoded samples), `DataLoader`
(a torch DataLoader that meters the bits it yields), `make_loader` (both, set up the
recommended way for the build's codec). Read dataset.py first: its `__iter__` runs the stages."""

from __future__ import annotations

from .dataloader import BitMeter, DataLoader, collate_channels_last, collate_padded
from .dataset import LossyDataset, open_dataset
from .recommended import decode_threads_for, decoded_samples, default_cores, make_loader
from .wds import WebDatasetDecoder, webdataset_decoder

__all__ = [
    "BitMeter",
    "DataLoader",
    "LossyDataset",
    "collate_channels_last",
    "collate_padded",
    "decode_threads_for",
    "decoded_samples",
    "default_cores",
    "make_loader",
    "open_dataset",
    "WebDatasetDecoder",
    "webdataset_decoder",
]
