"""Decoding loader: a torch IterableDataset over a lossyds build, plus a DataLoader that meters bits.

Every sample is a dict: `key` (str), `image` (uint8 [C, H, W]) or `audio` (float32
[channels, frames]) with `sample_rate` (int), `payload_bits` (int: bits of the stored
bitstream), `pixels` (source pixels) or `num_frames` (source frames), and the dataset's
targets under plain names (`label`, `text`, `mask`, `stems`, ...).

Splitting: samples (in shard order, shuffled per epoch when asked) are cut into
contiguous, equal (+-1) ranges, one per (DDP rank x DataLoader worker), so every
sample is read exactly once per epoch, whatever the number of shards.

Two-stage neural decode (`decode_device="cuda"`): DataLoader workers (or decode threads)
do the entropy decoding on CPU and hand over `Latent`s; the synthesis network then runs
once per batch on the device, in the iterating process (`lossyds.DataLoader` does this
before collating; a dataset iterated directly does it every `synthesis_batch` samples).
"""
from __future__ import annotations

import io
import itertools
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
import torch.utils.data

from . import allocator, codecs
from .codecs.base import Latent
from .errors import LossydsError, ShardError, UsageError
from .manifest import load_manifest
from .shards import MappedShard, SampleEntry, is_url, join_location, read_meta

OnError = Literal["raise", "skip"]
INDEX_CACHE_SAMPLES = 250_000  # shard-index entries remembered per process across epochs (~0.5 kB each)


def decode_attachment(extension: str, data: bytes) -> Any:
    """A losslessly stored target member -> tensor / text / object, by its extension."""
    if extension.endswith("png"):
        from torchvision.io import ImageReadMode, decode_png

        return decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    if extension.endswith(("flac", "wav")):
        import soundfile

        audio, _rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(audio.T))
    if extension.endswith("json"):
        return json.loads(data)
    if extension.endswith(("txt", "cls")):
        return data.decode()
    return data


def place_attachment(sample: dict[str, Any], extension: str, value: Any) -> None:
    """'mask.png' -> sample['mask']; 'stems.drums.flac' -> sample['stems']['drums']."""
    parts = extension.split(".")[:-1]
    target = sample
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


class LossyDataset(torch.utils.data.IterableDataset):
    """Iterates decoded samples of one lossyds build (see module docstring)."""

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
    ):
        if on_error not in ("raise", "skip"):
            raise UsageError(f"on_error must be 'raise' or 'skip' (got {on_error!r}).")
        self.root: str | Path = str(root) if is_url(root) else Path(root)
        self.manifest = load_manifest(self.root)
        self.shards = self.manifest["shards"]
        self.modality = self.manifest["modality"]
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = max(1, shuffle_buffer) if shuffle else 1
        self.transform = transform
        self.on_error = on_error
        if decode_threads < 0:
            raise UsageError(f"decode_threads must be >= 0 (got {decode_threads}).")
        self.decode_threads = decode_threads
        if rank is None and world_size is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Captured here, in the rank's own process: DataLoader workers do not see the process group.
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self._rank = rank
        self._world_size = world_size
        self.epoch = 0
        self.errors: list[str] = []  # what on_error="skip" skipped, in this process
        self._index_cache: dict[str, tuple[tuple[int, int, int], list[SampleEntry]]] = {}  # shard -> (file stamp, entries)
        self._index_cached_samples = 0
        # Built now, not in a worker: an unknown codec or weights of another fingerprint fail here.
        self._codec: codecs.Codec = codecs.from_manifest(self.manifest["codec"], weights=weights)
        self.decode_cache = self._cache_folder(decode_cache) if decode_cache is not None else None
        self.decode_device = self._check_decode_device(decode_device, decode_cache)
        if synthesis_batch < 1:
            raise UsageError(f"synthesis_batch must be >= 1 (got {synthesis_batch}).")
        self.synthesis_batch = synthesis_batch
        self.tune_malloc = tune_malloc

    def _check_decode_device(self, device: str | torch.device | None, decode_cache: Any) -> torch.device | None:
        if device is None:
            return None
        if not self._codec.batched_synthesis:
            two_stage = ", ".join(n for n in codecs.available() if codecs.codec_class(n).batched_synthesis)
            raise UsageError(f"decode_device is for neural codecs that decode in two stages ({two_stage}); {self._codec.name} decodes in one, on the CPU.")
        if decode_cache is not None:
            raise UsageError("decode_device and decode_cache are alternatives: the cache serves decoded samples, the device decodes them.")
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UsageError(f"decode_device {device!r} is not a torch device: {exc}") from exc

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to spawned workers) without the shard-index cache: each process keeps its own."""
        state = dict(self.__dict__)
        state["_index_cache"], state["_index_cached_samples"] = {}, 0
        return state

    def _cache_folder(self, base: str | Path) -> Path:
        """One folder per (dataset fingerprint, codec settings, weights): a cache never serves another build."""
        import hashlib

        identity = json.dumps([self.manifest["dataset"].get("source_root_fingerprint"), self.manifest["codec"], [s["sha256"] for s in self.shards]], sort_keys=True)
        folder = Path(base) / hashlib.sha256(identity.encode()).hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _decode_bitstream(self, shard: MappedShard, entry: SampleEntry, meta: dict[str, Any], crc: int | None) -> torch.Tensor | Latent:
        """The codec's decode (its entropy stage only, with decode_device), or its result from
        the decode cache (lossless .npy files, written atomically)."""
        if self.decode_device is not None:
            return self.codec.decode_latent(shard.read(entry, self.codec.extension, crc), meta)
        if self.decode_cache is None:
            return self.codec.decode(shard.read(entry, self.codec.extension, crc), meta)
        path = self.decode_cache / f"{entry.key}.npy"
        if path.is_file():
            try:
                return torch.from_numpy(np.load(path, allow_pickle=False))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged cache entry is decoded again
        decoded = self.codec.decode(shard.read(entry, self.codec.extension, crc), meta)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, decoded.numpy(), allow_pickle=False)
        os.replace(partial, path)
        return decoded

    # -- splitting ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch (same seed + epoch on every rank gives one consistent split)."""
        self.epoch = epoch

    def rank_and_world(self) -> tuple[int, int]:
        """(rank, world size): given explicitly, else the process group's at construction or now,
        else torchrun's RANK / WORLD_SIZE environment variables, else (0, 1)."""
        if self._rank is not None or self._world_size is not None:
            rank, world = self._rank or 0, self._world_size or 1
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise UsageError(f"rank {rank} is outside world size {world}.")
        return rank, world

    def _ranges(self, part: int, parts: int) -> list[tuple[int, int, int]]:
        """(shard index, first sample, end sample) ranges of global part `part` of `parts`."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        total = self.manifest["num_samples"]
        start, stop = part * total // parts, (part + 1) * total // parts
        ranges, position = [], 0
        for shard_index in order:
            count = self.shards[shard_index]["num_samples"]
            low, high = max(start, position), min(stop, position + count)
            if low < high:
                ranges.append((shard_index, low - position, high - position))
            position += count
        return ranges

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its workers together)."""
        rank, world = self.rank_and_world()
        total = self.manifest["num_samples"]
        return (rank + 1) * total // world - rank * total // world

    # -- reading -------------------------------------------------------------------------

    @property
    def codec(self) -> codecs.Codec:
        return self._codec

    def decode_entries(self, references: list[tuple[MappedShard, SampleEntry]]) -> list[dict[str, Any] | ShardError]:
        """Several samples at once (a decode thread's chunk): one sample dict or ShardError per
        reference, in order. The bitstreams go to the codec's `decode_many` together (one GIL
        release for the whole chunk where the codec has a native batch path); with a
        decode_cache or decode_device, each goes through `_decode_bitstream` on its own."""
        codec = self.codec
        one_by_one = self.decode_cache is not None or self.decode_device is not None
        prepared: list[tuple[MappedShard, SampleEntry, dict[str, Any], list[str]] | ShardError] = []
        bitstreams: list[tuple[bytes, dict[str, Any]]] = []
        decoded: list[Any] = []
        for shard, entry in references:
            try:
                meta, payload_members = read_meta(shard, entry, codec.extension)
                crc = (meta.get("crc32") or {}).get(codec.extension)
                if one_by_one:
                    try:
                        decoded.append(self._decode_bitstream(shard, entry, meta, crc))
                    except Exception as exc:  # named below, with the sample, like decode_many's
                        decoded.append(exc)
                else:
                    bitstreams.append((shard.read(entry, codec.extension, crc), meta))
                prepared.append((shard, entry, meta, payload_members))
            except ShardError as exc:
                prepared.append(exc)
            except DECODE_ERRORS as exc:
                prepared.append(_undecodable(shard, entry, exc))
        values = iter(decoded if one_by_one else codec.decode_many(bitstreams))
        results: list[dict[str, Any] | ShardError] = []
        for item in prepared:
            if isinstance(item, ShardError):
                results.append(item)
                continue
            shard, entry, meta, payload_members = item
            value = next(values)
            try:
                if isinstance(value, BaseException):
                    raise value
                results.append(self._assemble(shard, entry, meta, payload_members, value))
            except ShardError as exc:
                results.append(exc)
            except DECODE_ERRORS as exc:
                results.append(_undecodable(shard, entry, exc))
        return results

    def _assemble(self, shard: MappedShard, entry: SampleEntry, meta: dict[str, Any], payload_members: list[str], decoded: Any) -> dict[str, Any]:
        """The sample dict around a decoded payload: targets, attachments, encoded extras."""
        codec = self.codec
        sample: dict[str, Any] = {"key": entry.key, "payload_bits": meta["payload_bits"]}
        if self.modality == "image":
            sample["image"] = decoded
            sample["pixels"] = meta["height"] * meta["width"]
        else:
            sample["audio"] = decoded
            sample["sample_rate"] = meta["sample_rate"]
            sample["num_frames"] = meta["num_frames"]
        sample.update(meta.get("targets", {}))
        attachments = [extension for extension in entry.members if extension not in (codec.extension, "json", "cls", "txt")]
        crcs = meta.get("crc32") or {}
        for extension in attachments:
            data = shard.read(entry, extension, crcs.get(extension))
            if extension not in payload_members:
                value = decode_attachment(extension, data)
            else:  # a codec-encoded extra (e.g. a separation stem)
                value = codec.decode_latent(data, meta) if self.decode_device is not None else codec.decode(data, meta)
            place_attachment(sample, extension, value)
        return sample

    def _open_shard(self, name: str) -> MappedShard:
        """Open a shard, reusing its index from an earlier epoch when the file is unchanged.

        Re-scanning the tar headers cost ~23 us a sample (cProfile, JPEG q5 shards), in the thread that feeds the decode
        threads. Only local plain-tar shards that indexed cleanly are remembered, up to
        INDEX_CACHE_SAMPLES entries per process (a few hundred bytes each)."""
        location = join_location(self.root, name)
        stamp = None
        if isinstance(location, Path) and location.suffix == ".tar":
            try:
                info = location.stat()
                stamp = (info.st_size, info.st_mtime_ns, info.st_ino)
            except OSError:
                stamp = None
        cached = self._index_cache.get(name)
        index = cached[1] if cached is not None and stamp is not None and cached[0] == stamp else None
        shard = MappedShard(location, name, tolerate_damage=self.on_error == "skip", index=index)
        if index is None and stamp is not None and not shard.damage and self._index_cached_samples + len(shard.entries) <= INDEX_CACHE_SAMPLES:
            self._index_cache[name] = (stamp, shard.entries)
            self._index_cached_samples += len(shard.entries)
        return shard

    def _entries(self, shard_index: int, first: int, end: int) -> Iterator[tuple[MappedShard, SampleEntry]]:
        """(shard, entry) references of one range: member bytes are not read yet."""
        name = self.shards[shard_index]["path"]
        try:
            shard = self._open_shard(name)
        except ShardError as exc:
            if self.on_error == "raise":
                raise
            self._note_error(str(exc))
            return
        expected = self.shards[shard_index]["num_samples"]
        for damage in shard.damage:  # on_error="skip": the samples before the damage are still served
            self._note_error(f"{damage} (samples after it in this shard are lost)")
        if len(shard.entries) != expected and not shard.damage:
            error = ShardError(f"shard {name} holds {len(shard.entries)} samples but the manifest says {expected}", shard=name)
            if self.on_error == "raise":
                raise error
            self._note_error(str(error))
        for entry in shard.entries[first:end]:
            yield shard, entry
        # the map closes when the last reference (possibly in the shuffle buffer) goes

    def _process(self, references: list[tuple[MappedShard, SampleEntry]]) -> list[Any]:
        """Decode + transform a chunk of samples (in a decode thread when decode_threads > 1).
        A sample that cannot be decoded becomes _SKIPPED (on_error="skip", noted) or a
        _Raise that the iterating thread raises once the samples before it are out.
        With decode_device the samples still hold Latents: `synthesize` finishes them."""
        out: list[Any] = []
        for result in self.decode_entries(references):
            if isinstance(result, ShardError):
                if self.on_error == "raise":
                    out.append(_Raise(result))
                    break
                self._note_error(str(result))
                out.append(_SKIPPED)
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
            _find_latents(sample, found)
            if len(found) > before:
                pending.append(position)
        if not found:
            return samples
        try:
            decoded = self.codec.synthesize([latent for _, _, latent in found], self.decode_device)
        except (LossydsError, ValueError, RuntimeError) as exc:
            keys = [samples[p].get("key") for p in pending]
            raise LossydsError(f"{self.codec.name} synthesis on {self.decode_device} failed for samples {keys}: {exc}") from exc
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

    def __iter__(self) -> Iterator[Any]:
        if self.tune_malloc:
            allocator.keep_freed_buffers()
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        rank, world = self.rank_and_world()
        part, parts = rank * num_workers + worker_id, world * num_workers
        references: Iterator[tuple[MappedShard, SampleEntry]] = (ref for r in self._ranges(part, parts) for ref in self._entries(*r))
        if self.shuffle_buffer > 1:  # shuffles references, not decoded tensors: memory stays small
            references = _shuffled(references, self.shuffle_buffer, random.Random(hash((self.seed, self.epoch, part))))
        # Chunks share the work among decode threads; one thread gains nothing from them (and a
        # slow neural codec's first sample would wait for a whole chunk), so it takes one at a time.
        chunks = _chunked(references, DECODE_CHUNK if self.decode_threads > 1 else 1)
        if self.decode_threads > 1:
            results = _threaded_map(self._process, chunks, self.decode_threads, window=decode_window(self.decode_threads))
        else:
            results = map(self._process, chunks)
        samples = _unchunked(results)
        if self.decode_device is None:
            yield from samples
        elif worker is not None:
            if not _IN_LOSSYDS_LOADER:
                raise UsageError("decode_device needs lossyds.DataLoader when num_workers > 0: it runs the batched synthesis in the main process (torch's DataLoader would try to collate undecoded latents).")
            yield from samples  # lossyds.DataLoader synthesizes each batch in the main process
        else:
            while chunk := list(itertools.islice(samples, self.synthesis_batch)):
                yield from self.synthesize(chunk)


_SKIPPED = object()
_IN_LOSSYDS_LOADER = False  # set in DataLoader workers started by lossyds.DataLoader
# Samples a decode thread takes at once (one decode_many call, one GIL release). 16 against 8
# (benchmarks/decode_chunk.py: the two alternating epoch by epoch, 2 threads on 2 cores):
# images/s JPEG q5 +3.6-3.8%, JPEG q90 +1.9%, WebP +2.1%; stacked in the main thread by
# default_collate +12%, by collate_channels_last +7%. Fewer thread handoffs: 0.19 against
# 0.35 voluntary context switches a sample (ad hoc).
DECODE_CHUNK = 16


def decode_window(threads: int) -> int:
    """Chunks in flight for `threads` decode threads: one per thread plus up to two finished
    and waiting (the slack lets the consumer be bursty; capped so that with many threads and
    large images the decoded-but-unconsumed memory stays near threads x DECODE_CHUNK images)."""
    return threads + min(threads, 2)


DECODE_ERRORS = (LossydsError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, OSError)


class _Raise:
    """A decode error travelling, in order, from a decode thread to the iterating thread."""

    __slots__ = ("error",)

    def __init__(self, error: ShardError):
        self.error = error


def _undecodable(shard: MappedShard, entry: SampleEntry, exc: BaseException) -> ShardError:
    """The ShardError naming shard and sample for a decode failure (`exc` kept as its cause)."""
    error = ShardError(f"shard {shard.name}: sample {entry.key!r} cannot be decoded: {exc}", shard=shard.name, key=entry.key)
    error.__cause__ = exc
    return error


def _chunked(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _unchunked(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    """Samples of processed chunks, in order: skipped ones left out, a _Raise raised."""
    for chunk in chunks:
        for sample in chunk:
            if sample is _SKIPPED:
                continue
            if type(sample) is _Raise:
                raise sample.error
            yield sample


def _find_latents(node: Any, found: list[tuple[dict[str, Any], str, Latent]]) -> None:
    """Append (holding dict, key, latent) for every Latent in a sample dict, nested dicts included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, Latent):
                found.append((node, key, value))
            elif isinstance(value, dict):
                _find_latents(value, found)


def _threaded_map(function: Callable[[Any], Any], items: Iterator[Any], threads: int, window: int | None = None) -> Iterator[Any]:
    """Ordered map over a thread pool, with at most `window` items in flight (default 2 x threads).

    The loader's items are chunks of DECODE_CHUNK samples (amortising the pool's per-task
    cost). Image decoders (torchvision's libjpeg-turbo / libwebp / libpng) release the GIL,
    for a whole chunk at once through the codecs' `decode_many`, so threads decode in
    parallel into memory this process owns: no pixels cross a process boundary (the cost
    that caps multi-process loaders here, ENVIRONMENT.md)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="lossyds-decode") as pool:
        in_flight: deque = deque()
        limit = window or 2 * threads
        for item in items:
            in_flight.append(pool.submit(function, item))
            if len(in_flight) >= limit:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _shuffled(stream: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle buffer: hold up to `size` items, emit a random one as each new one arrives."""
    buffer: list[Any] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def open_dataset(root: str | Path, **options: Any) -> LossyDataset:
    """Open a lossyds build as a torch IterableDataset of decoded samples.

    `root`: a local folder, or any fsspec URL of one (`hf://datasets/OWNER/NAME`,
    `s3://...`, `file://...`); remote shards are streamed one at a time.

    Options: shuffle (bool), seed (int), shuffle_buffer (samples), transform (callable on
    each sample dict, run in the decode threads; with decode_device, after the synthesis), on_error ("raise" | "skip"), rank /
    world_size (override DDP), decode_threads (decode this many samples at once in
    threads of the iterating process; the fast path for images, see the README),
    weights (neural codecs: a checkpoint path or random:SEED instead of the recorded
    weights; its fingerprint must match the manifest's), decode_cache (a folder: decoded
    samples are kept there losslessly and reused next epoch, for codecs too slow to decode
    every epoch, e.g. mbt2018 or cheng2020-anchor on a CPU), decode_device (neural codecs:
    "cuda", ...: entropy decoding stays on CPU in the workers, the synthesis network runs
    batched on this device and samples arrive there; use lossyds.DataLoader with workers),
    synthesis_batch (latents per synthesis call when the dataset is iterated without
    lossyds.DataLoader workers; with them, each DataLoader batch is one call), tune_malloc
    (default True: on glibc, once per iterating process, keep freed decode buffers for reuse
    instead of returning them to the OS after every batch; see lossyds.allocator; False, or
    LOSSYDS_TUNE_MALLOC=0, leaves malloc alone).
    """
    return LossyDataset(root, **options)


def make_loader(root: str | Path, batch_size: int | None = 32, *, cores: int | None = None, collate_fn: Callable[[list[Any]], Any] | None = None,
                pin_memory: bool = False, drop_last: bool = False, **dataset_options: Any) -> "DataLoader":
    """A lossyds.DataLoader over the build at `root`, set up the way the README recommends for
    its codec: JPEG/WebP/AVIF/PNG decode in `cores` threads of this process (no worker
    processes); audio and neural codecs in `cores` DataLoader worker processes (persistent);
    with decode_device (neural codecs), the workers entropy-decode and this process
    synthesizes each batch there. cores: None = one per core up to 8; 0 = decode in this
    thread. dataset_options go to open_dataset (shuffle, seed, transform, on_error,
    decode_device, weights, ...); reach the dataset as `loader.dataset` (set_epoch)."""
    if cores is not None and cores < 0:
        raise UsageError(f"cores must be >= 0 (got {cores}).")
    if "decode_threads" in dataset_options:
        raise UsageError("make_loader chooses decode_threads from cores; to set it yourself, use open_dataset and lossyds.DataLoader.")
    cores = default_decode_workers() if cores is None else cores
    threads = decode_threads_for(load_manifest(root)["codec"]["name"], cores)
    dataset = LossyDataset(root, decode_threads=threads, **dataset_options)
    workers = 0 if threads > 1 else cores
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=workers > 0)


def default_decode_workers() -> int:
    """Decode threads or worker processes for `lossyds eval` / `verify --decode` when none are
    asked for: one per core this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def decode_threads_for(codec_name: str, workers: int) -> int:
    """decode_threads for reading a build of `codec_name` with `workers` cores, as the README
    recommends: all of them for codecs whose decoders release the GIL (JPEG, WebP, AVIF,
    PNG), else 0 (decode in `workers` DataLoader worker processes; see decoded_samples). The
    codecs that take a decode_device (neural, two-stage) are all of the second kind."""
    return workers if workers > 1 and codecs.codec_class(codec_name).decodes_in_threads else 0


def decoded_samples(dataset: LossyDataset, workers: int, batch: int = 32) -> Iterator[dict[str, Any]]:
    """Every sample of `dataset` for this rank, decoded in parallel: in its own decode threads
    when it has them (or in this thread when workers == 0), else in `workers` DataLoader
    worker processes (with a decode_device, this process synthesizes each batch). Each sample
    comes once; the order is the loader's (samples carry `key`). Used by `lossyds eval` and
    `lossyds verify --decode`."""
    processes = 0 if dataset.decode_threads > 1 else workers
    if processes == 0:
        yield from dataset
        return
    try:
        for samples in DataLoader(dataset, batch_size=batch, num_workers=processes, collate_fn=_uncollated):
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
        return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)
    except Exception:  # a LossydsError subclass with another signature: keep torch's
        return exc


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
    pixels = [sample["image"].permute(1, 2, 0) for sample in batch]  # [H, W, C] views: contiguous for torchvision's output
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
        global _IN_LOSSYDS_LOADER
        _IN_LOSSYDS_LOADER = True
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
            # CPU work (resampling, collate) overlaps another's device work. EnCodec on the H200:
            # 1005x -> 1300x real time with 4 workers (benchmarks/device_decode.py).
            batches = _threaded_map(self._finish_batch, batches, threads=2)
        for batch in batches:
            self.bits.update(batch)
            yield batch
