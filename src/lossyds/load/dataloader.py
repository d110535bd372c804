"""lossyds.DataLoader (a torch DataLoader that meters the bits it yields), the bit meter, and collates."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.data

from .dataset import LossyDataset, PendingErrors
from .parallel import threaded_map


class BitMeter:
    """Running account of the bits delivered: samples, payload bits, and bpp or kbps.

    lossyds.DataLoader feeds it each batch's samples before your collate_fn runs, so what it
    counts does not depend on the collate. `update` also takes sample dicts or collated
    batches (tensors of `payload_bits`, `pixels`, `num_frames`, `sample_rate`) for your own
    loops; items that carry no `payload_bits` (a transform returned a tuple) are counted as
    `unmetered`."""

    def __init__(self) -> None:
        self.samples = 0
        self.payload_bits = 0
        self.pixels = 0
        self.seconds = 0.0
        self.unmetered = 0

    def update(self, batch: Any) -> None:
        if isinstance(batch, (list, tuple)):
            for item in batch:
                self.update(item)
            return
        if not isinstance(batch, dict) or "payload_bits" not in batch:
            self.unmetered += 1
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

    def add(self, other: BitMeter) -> None:
        self.samples += other.samples
        self.payload_bits += other.payload_bits
        self.pixels += other.pixels
        self.seconds += other.seconds
        self.unmetered += other.unmetered

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
        if self.unmetered:
            out["unmetered_samples"] = self.unmetered
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


def collate_padded(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples whose tensors differ in size (latents, audio of unequal length,
    images of unequal size): each tensor field becomes [N, *largest] with zeros after each
    sample's own extent, plus `<field>_mask` (bool, same shape, True on real entries) when
    the sizes differ; nested dicts (`latent`, `stems`) are collated field by field; numbers
    become tensors; anything else stays a list."""
    out: dict[str, Any] = {}
    for name in batch[0]:
        values = [sample[name] for sample in batch]
        first = values[0]
        if isinstance(first, dict):
            out[name] = collate_padded(values)
        elif isinstance(first, torch.Tensor):
            if len({value.dim() for value in values}) != 1:
                raise ValueError(f"collate_padded: {name!r} tensors have different numbers of dimensions")
            largest = [max(value.shape[d] for value in values) for d in range(first.dim())]
            if all(list(value.shape) == largest for value in values):
                out[name] = torch.stack(values)
                continue
            padded = first.new_zeros((len(values), *largest))
            mask = torch.zeros((len(values), *largest), dtype=torch.bool)
            for index, value in enumerate(values):
                region = (index, *(slice(0, size) for size in value.shape))
                padded[region] = value
                mask[region] = True
            out[name], out[f"{name}_mask"] = padded, mask
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            out[name] = torch.tensor(values)
        else:
            out[name] = values
    return out


class _WorkerInit:
    """worker_init_fn of lossyds.DataLoader: marks the worker's dataset, then runs the user's own."""

    def __init__(self, user: Callable[[int], None] | None):
        self.user = user

    def __call__(self, worker_id: int) -> None:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and isinstance(worker.dataset, LossyDataset):
            worker.dataset.in_lossyds_worker = True
            # the copy came with the main process's records: deliver only what this worker notes
            worker.dataset._errors_delivered = len(worker.dataset.errors)
        if self.user is not None:
            self.user(worker_id)


def uncollated(batch: Any) -> Any:
    """collate_fn that leaves a batch a list of samples (synthesis deferred, eval, verify)."""
    return batch


class _Nothing:
    """The batch of a Delivery that carries skip records only; one object in every process."""

    def __reduce__(self) -> str:
        return "NOTHING"  # unpickled as this module's NOTHING, so `is NOTHING` holds across processes


NOTHING = _Nothing()


class Delivery:
    """What lossyds.DataLoader's collate hands from a worker to the main process: the
    collated batch (or NOTHING), the bits of its samples counted before the collate, and
    the skip records the worker noted since its last delivery (on_error="skip")."""

    __slots__ = ("batch", "bits", "errors")

    def __init__(self, batch: Any, bits: BitMeter, errors: list[str]):
        self.batch, self.bits, self.errors = batch, bits, errors

    def pin_memory(self, *args: Any) -> Delivery:  # called by torch's pin-memory thread
        from torch.utils.data._utils.pin_memory import pin_memory

        if self.batch is not NOTHING:
            self.batch = pin_memory(self.batch, *args)
        return self


class _MeteredCollate:
    """collate_fn of lossyds.DataLoader: meters the samples, takes the worker's new skip
    records, then runs the user's collate (`collate`), all in a Delivery."""

    def __init__(self, collate: Callable[[Any], Any], batched: bool, batch_size: int | None, drop_last: bool):
        self.collate, self.batched, self.batch_size, self.drop_last = collate, batched, batch_size, drop_last

    def __call__(self, batch: Any) -> Delivery:
        items = batch if self.batched else [batch]
        samples = [item for item in items if item.__class__ is not PendingErrors]
        errors: list[str] = []
        if len(samples) < len(items):
            errors = [message for item in items if item.__class__ is PendingErrors for message in item.messages]
        worker = torch.utils.data.get_worker_info()
        if worker is not None and isinstance(worker.dataset, LossyDataset):
            errors += worker.dataset.take_undelivered_errors()
        bits = BitMeter()
        for sample in samples:  # one count per sample, whatever a transform made of it
            if isinstance(sample, dict):
                bits.update(sample)
            else:
                bits.unmetered += 1
        if not samples or (len(samples) < len(items) and self.drop_last and len(samples) < (self.batch_size or 0)):
            return Delivery(NOTHING, BitMeter(), errors)  # dropped as drop_last says: nothing was fed
        return Delivery(self.collate(samples if self.batched else samples[0]), bits, errors)


_POSITIONAL = tuple(inspect.signature(torch.utils.data.DataLoader.__init__).parameters)[2:]


class DataLoader(torch.utils.data.DataLoader):
    """torch.utils.data.DataLoader that also keeps a BitMeter (`.bits`) of what it yielded.

    Over a LossyDataset, the samples of each batch are metered before `collate_fn` runs (so
    any collate works), and what on_error="skip" skipped in worker processes reaches
    `loader.dataset.errors` in this process (with drop_last, a skip after a worker's last
    full batch can stay in that worker's warnings). With a LossyDataset opened with
    `decode_device`, workers entropy-decode and hand their batch over as a list; this
    process runs the synthesis on the device for the whole batch, then your `collate_fn`
    (default: torch's default_collate). Pass `collate_fn` and `worker_init_fn` by keyword."""

    def __init__(self, dataset: Any, *args: Any, **kwargs: Any):
        self._finish: Callable[[list[Any]], list[Any]] | None = None
        self._collate: Callable[[list[Any]], Any] | None = None
        for name, value in zip(_POSITIONAL, args):  # torch's order after `dataset`
            kwargs[name] = value
        self._metered = isinstance(dataset, LossyDataset)
        if self._metered:
            batch_size = kwargs.get("batch_size", 1)
            batched = batch_size is not None or kwargs.get("batch_sampler") is not None
            user = kwargs.pop("collate_fn", None)
            if dataset.decode_device is not None:
                self._finish = dataset.synthesize
                self._collate = user
                collate: Callable[[Any], Any] = uncollated
            elif user is not None:
                collate = user
            else:
                collate = torch.utils.data.default_collate if batched else torch.utils.data.default_convert
            kwargs["collate_fn"] = _MeteredCollate(collate, batched, batch_size, kwargs.get("drop_last", False))
            kwargs["worker_init_fn"] = _WorkerInit(kwargs.get("worker_init_fn"))
        super().__init__(dataset, **kwargs)
        self.bits = BitMeter()

    def _finish_batch(self, batch: Any) -> Any:
        """Synthesis for one batch from the workers, then the user's collate."""
        assert self._finish is not None
        if self.batch_size is None:  # no automatic batching: one sample at a time
            sample = self._finish([batch])[0]
            return self._collate(sample) if self._collate is not None else torch.utils.data.default_convert(sample)
        return (self._collate or torch.utils.data.default_collate)(self._finish(batch))

    def _delivered(self, deliveries: Any) -> Any:
        """Batches out of Deliveries: their bits to the meter, their skip records to the dataset."""
        in_workers = self.num_workers > 0
        for delivery in deliveries:
            self.bits.add(delivery.bits)
            if in_workers and delivery.errors:
                self.dataset.errors.extend(delivery.errors)
            if delivery.batch is not NOTHING:
                yield delivery.batch

    def __iter__(self):  # type: ignore[override]
        batches = super().__iter__()
        if not self._metered:
            for batch in batches:
                self.bits.update(batch)
                yield batch
            return
        batches = self._delivered(batches)
        if self._finish is not None:
            # Two finishing threads (up to four batches queued), results in order: one batch's
            # CPU work (resampling, collate) overlaps another's device work.
            batches = threaded_map(self._finish_batch, batches, threads=2)
        yield from batches
