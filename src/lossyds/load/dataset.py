"""LossyDataset: a torch IterableDataset of the decoded samples of one lossyds build.

Iteration, top to bottom (`__iter__`): this reader's ranges of the shards (split.py) ->
(shard, entry) references (reader.py) -> shuffle buffer -> chunks -> decode and
transform, in decode threads or here (decode.py, parallel.py) -> samples; with a decode
device, the synthesis runs on batches of them (`synthesize`).

Every sample is a dict: `key` (str), `image` (uint8 [C, H, W]) or `audio` (float32
[channels, frames]) with `sample_rate` (int), `payload_bits` (int: bits of the stored
bitstream), `pixels` (source pixels) or `num_frames` (source frames), and the dataset's
targets under plain names (`label`, `text`, `mask`, `stems`, ...).
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.utils.data

from .. import allocator, codecs
from ..codecs.base import Latent
from ..errors import LossydsError, ShardError, UsageError
from ..location import as_location
from ..manifest import load_manifest
from . import parallel, split
from .decode import Decoder, cache_folder, find_latents
from .reader import Reference, ShardReader

OnError = Literal["raise", "skip"]


class PendingErrors:
    """Yielded last by a lossyds.DataLoader worker whose skip records (on_error="skip") came
    after its last sample: not a sample, it carries the records to the loader's collate,
    which sends them to the main process."""

    __slots__ = ("messages",)

    def __init__(self, messages: list[str]):
        self.messages = messages


class LossyDataset(torch.utils.data.IterableDataset):
    """Iterates decoded samples of one lossyds build; see `open_dataset` for the options."""

    def __init__(
        self,
        root: str | Path,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        on_error: OnError = "raise",
        rank: int | None = None,
        world_size: int | None = None,
        decode_threads: int = 0,
        weights: str | None = None,
        decode_cache: str | Path | None = None,
        decode_device: str | torch.device | None = None,
        synthesis_batch: int = 32,
        tune_malloc: bool = True,
        output: str = "decoded",
        manifest: dict[str, Any] | None = None,
    ):
        if on_error not in ("raise", "skip"):
            raise UsageError(f"on_error must be 'raise' or 'skip' (got {on_error!r}).")
        if decode_threads < 0:
            raise UsageError(f"decode_threads must be >= 0 (got {decode_threads}).")
        if synthesis_batch < 1:
            raise UsageError(f"synthesis_batch must be >= 1 (got {synthesis_batch}).")
        if output not in ("decoded", "latent"):
            raise UsageError(f"output must be 'decoded' or 'latent' (got {output!r}).")
        if output == "latent" and (decode_device is not None or decode_cache is not None):
            raise UsageError(
                "output='latent' hands out what the codec stores: it takes no decode_device or decode_cache."
            )
        self.root: str | Path = as_location(root)
        self.manifest = load_manifest(self.root) if manifest is None else manifest
        self.shards = self.manifest["shards"]
        self.modality = self.manifest["modality"]
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.shuffle_buffer = max(1, shuffle_buffer) if shuffle else 1
        self.transform = transform
        self.on_error = on_error
        self.decode_threads = decode_threads
        self.synthesis_batch = synthesis_batch
        self.tune_malloc = tune_malloc
        if rank is None and world_size is None:
            rank, world_size = split.process_group_rank()
        self._rank, self._world_size = rank, world_size
        self.errors: list[str] = []  # what on_error="skip" skipped (with lossyds.DataLoader, in its workers too)
        self._errors_delivered = 0  # in a worker: how many of `errors` went to the main process
        # True in this dataset's copy in a lossyds.DataLoader worker (set by the loader's
        # worker_init): its collate takes undecoded latents and carries skip records.
        self.in_lossyds_worker = False
        self.reader = ShardReader(self.root, self.shards, tolerate_damage=on_error == "skip", note=self._note_error)
        # Built now, not in a worker: an unknown codec or weights of another fingerprint fail here.
        codec = codecs.from_manifest(self.manifest["codec"], weights=weights)
        cache = cache_folder(decode_cache, self.manifest) if decode_cache is not None else None
        if output == "latent" and not codec.latent_fields:
            codec.latent_output(b"", {})  # raises the codec's one-sentence refusal
        self.output = output
        self.decoder = Decoder(
            codec, self.modality, cache, self._check_decode_device(codec, decode_device, decode_cache), output
        )

    @staticmethod
    def _check_decode_device(
        codec: codecs.Codec, device: str | torch.device | None, decode_cache: Any
    ) -> torch.device | None:
        if device is None:
            return None
        if not codec.batched_synthesis:
            two_stage = ", ".join(n for n in codecs.available() if codecs.codec_class(n).batched_synthesis)
            raise UsageError(
                f"decode_device is for neural codecs that decode in two stages ({two_stage}); {codec.name} decodes in one, on the CPU."
            )
        if decode_cache is not None:
            raise UsageError(
                "decode_device and decode_cache are alternatives: the cache serves decoded samples, the device decodes them."
            )
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UsageError(f"decode_device {device!r} is not a torch device: {exc}") from exc

    @property
    def codec(self) -> codecs.Codec:
        return self.decoder.codec

    @property
    def decode_device(self) -> torch.device | None:
        return self.decoder.device

    @property
    def decode_cache(self) -> Path | None:
        return self.decoder.cache

    # -- splitting ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch (same seed + epoch on every rank gives one consistent split)."""
        self.epoch = epoch

    def rank_and_world(self) -> tuple[int, int]:
        """(rank, world size): given, else the process group's (at construction or now), else
        torchrun's RANK / WORLD_SIZE, else (0, 1)."""
        return split.rank_and_world(self._rank, self._world_size)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its workers together)."""
        rank, world = self.rank_and_world()
        return split.part_size(self.manifest["num_samples"], rank, world)

    # -- reading -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        if self.tune_malloc:
            allocator.keep_freed_buffers()
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        rank, world = self.rank_and_world()
        part, parts = rank * num_workers + worker_id, world * num_workers
        order = split.shard_order(len(self.shards), self.shuffle, self.seed, self.epoch)
        references: Iterator[Reference] = (
            ref for r in split.ranges(self.shards, order, part, parts) for ref in self.reader.references(*r)
        )
        if self.shuffle_buffer > 1:  # shuffles references, not decoded tensors: memory stays small
            references = parallel.shuffled(
                references, self.shuffle_buffer, random.Random(hash((self.seed, self.epoch, part)))
            )
        # Chunks share the work among decode threads; one thread gains nothing from them (and a
        # slow neural codec's first sample would wait for a whole chunk), so it takes one at a time.
        chunks = parallel.chunked(references, parallel.DECODE_CHUNK if self.decode_threads > 1 else 1)
        if self.decode_threads > 1:
            results = parallel.threaded_map(
                self._process, chunks, self.decode_threads, window=parallel.decode_window(self.decode_threads)
            )
        else:
            results = map(self._process, chunks)
        samples = parallel.unchunked(results)
        if self.decode_device is None:
            yield from samples
        elif worker is not None:
            if not self.in_lossyds_worker:
                raise UsageError(
                    "decode_device needs lossyds.DataLoader when num_workers > 0: it runs the batched synthesis in the main process "
                    "(torch's DataLoader would try to collate undecoded latents)."
                )
            yield from samples  # lossyds.DataLoader synthesizes each batch in the main process
        else:
            while chunk := list(itertools.islice(samples, self.synthesis_batch)):
                yield from self.synthesize(chunk)
        if worker is not None and self.in_lossyds_worker and len(self.errors) > self._errors_delivered:
            yield PendingErrors(self.take_undelivered_errors())  # skips after this worker's last sample

    def take_undelivered_errors(self) -> list[str]:
        """In a DataLoader worker: skip records noted since the last call (lossyds.DataLoader
        sends them to the main process with each batch)."""
        new = self.errors[self._errors_delivered :]
        self._errors_delivered += len(new)  # a decode thread may append meanwhile: it goes next time
        return new

    def _process(self, references: list[Reference]) -> list[Any]:
        """Decode + transform a chunk of samples (in a decode thread when decode_threads > 1).
        A sample that cannot be decoded becomes SKIPPED (on_error="skip", noted) or a Raise
        that the iterating thread raises once the samples before it are out. With a decode
        device the samples still hold Latents: `synthesize` finishes them."""
        out: list[Any] = []
        for result in self.decoder.decode(references):
            if isinstance(result, ShardError):
                if self.on_error == "raise":
                    out.append(parallel.Raise(result))
                    break
                self._note_error(str(result))
                out.append(parallel.SKIPPED)
            elif self.decode_device is None and self.transform is not None:
                out.append(self.transform(result))
            else:
                out.append(result)
        return out

    def synthesize(self, samples: list[Any]) -> list[Any]:
        """Finish two-stage samples: every Latent in them (payload and encoded targets) goes
        through the codec's synthesis on `decode_device` in one call; then the transform.
        Samples without Latents pass through unchanged (already finished)."""
        found: list[tuple[dict[str, Any], str, Latent]] = []
        pending: list[int] = []
        for position, sample in enumerate(samples):
            before = len(found)
            find_latents(sample, found)
            if len(found) > before:
                pending.append(position)
        if not found:
            return samples
        try:
            decoded = self.codec.synthesize([latent for _, _, latent in found], self.decode_device)
        except (LossydsError, ValueError, RuntimeError) as exc:
            keys = [samples[p].get("key") for p in pending]
            raise LossydsError(
                f"{self.codec.name} synthesis on {self.decode_device} failed for samples {keys}: {exc}"
            ) from exc
        for (holder, name, _), value in zip(found, decoded):
            holder[name] = value
        if self.transform is not None:
            samples = list(samples)
            for position in pending:
                samples[position] = self.transform(samples[position])
        return samples

    def _note_error(self, message: str) -> None:
        self.errors.append(message)
        warnings.warn(f"lossyds skipped: {message}", stacklevel=3)


def open_dataset(root: str | Path, **options: Any) -> LossyDataset:
    """Open a lossyds build as a torch IterableDataset of decoded samples.

    `root`: a local folder, or any fsspec URL of one (`hf://datasets/OWNER/NAME`,
    `s3://...`, `file://...`); remote shards are streamed one at a time.

    Options:
    - shuffle (bool), seed (int), shuffle_buffer (samples);
    - transform: callable on each sample dict, run in the decode threads (with decode_device,
      after the synthesis);
    - on_error: "raise" (default; the error names shard and sample) or "skip" (skipped
      samples are listed in `dataset.errors`);
    - rank / world_size: override DDP's;
    - decode_threads: decode this many samples at once in threads of the iterating process
      (the fast path for JPEG/WebP/AVIF/PNG; docs/loading.md);
    - weights: neural codecs, a checkpoint path or random:SEED instead of the recorded
      weights (their fingerprint must match the manifest's);
    - decode_cache: a folder where decoded samples are kept losslessly and reused next
      epoch, for codecs too slow to decode every epoch on a CPU;
    - decode_device: neural codecs, e.g. "cuda": entropy decoding stays on CPU in the
      workers, the synthesis network runs batched on this device (use lossyds.DataLoader);
    - synthesis_batch: latents per synthesis call when iterated without lossyds.DataLoader
      workers (with them, each DataLoader batch is one call);
    - tune_malloc: default True: on glibc, once per iterating process, keep freed decode
      buffers for reuse (lossyds.allocator); False, or LOSSYDS_TUNE_MALLOC=0, leaves malloc alone;
    - output: "decoded" (default: pixels or waveforms) or "latent": neural codecs hand out
      their entropy-decoded representation under `latent` instead, without synthesis
      (EnCodec: `codes` int64 [codebooks, frames], `segment_frames`, `scales`; CompressAI
      and MS-ILLM: `y_hat` [C, h, w]), `payload_bits` as always; other codecs refuse.
      `lossyds.collate_padded` batches them;
    - manifest: the build's manifest when the caller has already loaded it
      (lossyds.manifest.load_manifest(root)), so it is not fetched again.
    """
    return LossyDataset(root, **options)
