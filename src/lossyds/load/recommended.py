"""The recommended loading setup per codec, and decoding a whole build in parallel (eval, verify)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import codecs
from ..errors import LossydsError, UsageError
from ..manifest import load_manifest
from .dataloader import DataLoader, uncollated
from .dataset import LossyDataset


def make_loader(
    root: str | Path,
    batch_size: int | None = 32,
    *,
    cores: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    drop_last: bool = False,
    **dataset_options: Any,
) -> DataLoader:
    """A lossyds.DataLoader over the build at `root`, set up the recommended way for its codec
    : JPEG/WebP/AVIF/PNG decode in `cores` threads of this process (no worker
     processes); audio and neural codecs in `cores` DataLoader worker processes (persistent);
     with decode_device (neural codecs), the workers entropy-decode and this process
     synthesizes each batch there. cores: None = one per core up to 8; 0 = decode in this
     thread. dataset_options go to open_dataset (shuffle, seed, transform, on_error,
     decode_device, weights, ...); reach the dataset as `loader.dataset` (set_epoch)."""
    if cores is not None and cores < 0:
        raise UsageError(f"cores must be >= 0 (got {cores}).")
    if "decode_threads" in dataset_options:
        raise UsageError(
            "make_loader chooses decode_threads from cores; to set it yourself, use open_dataset and lossyds.DataLoader."
        )
    cores = default_cores() if cores is None else cores
    manifest = dataset_options.pop("manifest", None) or load_manifest(root)
    threads = decode_threads_for(manifest["codec"]["name"], cores)
    dataset = LossyDataset(root, decode_threads=threads, manifest=manifest, **dataset_options)
    workers = 0 if threads > 1 else cores
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )


def default_cores() -> int:
    """Cores for make_loader, `lossyds eval` and `verify --decode` when none are given: one
    per core this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def decode_threads_for(codec_name: str, cores: int) -> int:
    """decode_threads for reading a build of `codec_name` with `cores` cores, as recommended:
    all of them for codecs whose decoders release the GIL (JPEG, WebP, AVIF, PNG), else 0
    (decode in `cores` DataLoader worker processes; see decoded_samples). The codecs that
    take a decode_device (neural, two-stage) are all of the second kind."""
    return cores if cores > 1 and codecs.codec_class(codec_name).decodes_in_threads else 0


def decoded_samples(dataset: LossyDataset, cores: int, batch: int = 32) -> Iterator[dict[str, Any]]:
    """Every sample of `dataset` for this rank, decoded in parallel: in its own decode threads
    when it has them (or in this thread when cores == 0), else in `cores` DataLoader
    worker processes (with a decode_device, this process synthesizes each batch). Each sample
    comes once; the order is the loader's (samples carry `key`). Used by `lossyds eval` and
    `lossyds verify --decode`."""
    processes = 0 if dataset.decode_threads > 1 else cores
    if processes == 0:
        yield from dataset
        return
    try:
        for samples in DataLoader(dataset, batch_size=batch, num_workers=processes, collate_fn=uncollated):
            yield from samples
    except LossydsError as exc:
        raise _unwrapped(exc) from exc


def _unwrapped(exc: LossydsError) -> LossydsError:
    """torch re-raises a worker process's exception as the same type whose message is the
    worker's whole traceback ("Caught ShardError in DataLoader worker process 0. Original
    Traceback ..."); this gives back the original one-sentence error (its last line, less
    the type name) for the CLI. Other errors pass through unchanged."""
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return exc
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    try:
        return type(exc)(last[len(prefix) :] if last.startswith(prefix) else last)
    except Exception:  # a LossydsError subclass with another signature: keep torch's
        return exc
