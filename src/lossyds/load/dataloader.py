"""lossyds.DataLoader (a torch DataLoader that meters the bits it yields), the bit meter, and collates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils.data

from . import dataset as dataset_module
from .dataset import LossyDataset
from .parallel import threaded_map


class BitMeter:
    """Running account of the bits delivered: samples, payload bits, and bpp or kbps.

    Fed with sample dicts or collated batches (tensors of `payload_bits`, `pixels`,
    `num_frames`, `sample_rate`)."""

    def __init__(self) -> None:
        self.samples = 0
        self.payload_bits = 0
        self.pixels = 0
        self.seconds = 0.0

    def update(self, batch: Any) -> None:
        if isinstance(batch, (list, tuple)):
            for item in batch:
                self.update(item)
            return
        if not isinstance(batch, dict) or "payload_bits" not in batch:
            return
        if isinstance(batch["payload_bits"], int):  # one uncollated sample: plain ints, no tensors to build
            self.samples += 1
            self.payload_bits += batch["payload_bits"]
            self.pixels += int(batch.get("pixels", 0))
            if "num_frames" in batch and "sample_rate" in batch:
                self.seconds += float(batch["num_frames"]) / float(batch["sample_rate"])
            return
        bits = torch.as_tensor(batch["payload_bits"]).reshape(-1)
        self.samples += int(bits.numel())
        self.payload_bits += int(bits.sum())
        if "pixels" in batch:
            self.pixels += int(torch.as_tensor(batch["pixels"]).sum())
        if "num_frames" in batch and "sample_rate" in batch:
            frames = torch.as_tensor(batch["num_frames"], dtype=torch.float64).reshape(-1)
            rates = torch.as_tensor(batch["sample_rate"], dtype=torch.float64).reshape(-1)
            self.seconds += float((frames / rates).sum())

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {
            "samples": self.samples,
            "payload_bits": self.payload_bits,
            "mean_bits_per_sample": self.payload_bits / self.samples if self.samples else 0.0,
        }
        if self.pixels:
            out["bpp"] = self.payload_bits / self.pixels
        if self.seconds:
            out["kbps"] = self.payload_bits / self.seconds / 1000
        return out


def collate_channels_last(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """torch's default_collate, except that the images are stacked as one channels-last batch.

    torchvision's decoders return uint8 [C, H, W] views of [H, W, C] memory. default_collate
    stacks them into contiguous [N, C, H, W], a strided copy that costs about as much as
    decoding; here each image's bytes are copied as they lie, into [N, C, H, W] with
    channels-last strides (torch.channels_last). Values equal default_collate's; only the
    strides differ, so use .reshape() rather than .view() on it, or .contiguous() for NCHW
    memory. Convolutions take channels-last input as it is. Images must share one size, as
    with default_collate. In a DataLoader worker the batch is built in shared memory, as
    default_collate does."""
    from torch.utils.data import default_collate

    if not batch or not isinstance(batch[0], dict) or "image" not in batch[0]:
        return default_collate(batch)
    pixels = [
        sample["image"].permute(1, 2, 0) for sample in batch
    ]  # [H, W, C] views: contiguous for torchvision's output
    out = None
    if torch.utils.data.get_worker_info() is not None:
        first = pixels[0]
        storage = first._typed_storage()._new_shared(len(pixels) * first.numel(), device=first.device)
        out = first.new(storage).resize_(len(pixels), *first.shape)
    images = torch.stack(pixels, out=out).permute(0, 3, 1, 2)
    rest = default_collate([{key: value for key, value in sample.items() if key != "image"} for sample in batch])
    return {key: images if key == "image" else rest[key] for key in batch[0]}


class _WorkerInit:
    """worker_init_fn of lossyds.DataLoader: marks the worker, then runs the user's own."""

    def __init__(self, user: Callable[[int], None] | None):
        self.user = user

    def __call__(self, worker_id: int) -> None:
        dataset_module._IN_LOSSYDS_LOADER = True
        if self.user is not None:
            self.user(worker_id)


def _uncollated(batch: Any) -> Any:
    """collate_fn in the workers when synthesis is deferred: a batch stays a list of samples."""
    return batch


class DataLoader(torch.utils.data.DataLoader):
    """torch.utils.data.DataLoader that also keeps a BitMeter (`.bits`) of what it yielded.

    With a LossyDataset opened with `decode_device`, workers entropy-decode and hand their
    batch over as a list; the main process runs the synthesis on the device for the whole
    batch, then your `collate_fn` (default: torch's default_collate). Pass `collate_fn` and
    `worker_init_fn` by keyword."""

    def __init__(self, dataset: Any, *args: Any, **kwargs: Any):
        self._finish: Callable[[list[Any]], list[Any]] | None = None
        self._collate: Callable[[list[Any]], Any] | None = None
        if isinstance(dataset, LossyDataset) and dataset.decode_device is not None:
            self._finish = dataset.synthesize
            self._collate = kwargs.pop("collate_fn", None)
            kwargs["collate_fn"] = _uncollated
            kwargs["worker_init_fn"] = _WorkerInit(kwargs.get("worker_init_fn"))
        super().__init__(dataset, *args, **kwargs)
        self.bits = BitMeter()

    def _finish_batch(self, batch: Any) -> Any:
        """Synthesis for one batch from the workers, then the user's collate."""
        assert self._finish is not None
        if self.batch_size is None:  # no automatic batching: one sample at a time
            sample = self._finish([batch])[0]
            return self._collate(sample) if self._collate is not None else torch.utils.data.default_convert(sample)
        return (self._collate or torch.utils.data.default_collate)(self._finish(batch))

    def __iter__(self):  # type: ignore[override]
        batches = super().__iter__()
        if self._finish is not None:
            # Two finishing threads (up to four batches queued), results in order: one batch's
            # CPU work (resampling, collate) overlaps another's device work.
            batches = threaded_map(self._finish_batch, batches, threads=2)
        for batch in batches:
            self.bits.update(batch)
            yield batch
