"""Build stage 2: read one source sample, encode it, describe its record; in parallel processes."""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import codecs, record
from ..codecs.base import Codec
from ..errors import CodecError, SourceError, reason_text
from ..sources import Source, SourceRef
from ..types import SourceSample


@dataclass
class Encoded:
    """A sample after encoding, before the build picks among its rate candidates."""

    key: str
    candidates: list[tuple[dict[str, Any], bytes]]  # (per-sample codec settings, bitstream)
    candidate_metrics: list[dict[str, float]]  # quality metrics of each candidate (empty dicts without metrics)
    meta: dict[str, Any]  # KEY.json without payload_bits (lossyds.record.describe)
    attachments: dict[str, bytes]  # lossless targets and codec-encoded extra signals, by member extension
    extra_payload: int  # bytes of codec bitstreams among the attachments (encoded stems)
    source_sha256: str
    source_bytes: int
    raw_bits: int
    pixels: int
    seconds: float
    audio_samples: int


@dataclass
class Skipped:
    key: str
    reason: str


def encode_sample(source: Source, codec: Codec, ref: SourceRef, metric_names: list[str] = ()) -> Encoded | Skipped:
    """Read + encode one source sample; a SourceError/CodecError becomes a Skipped with the reason."""
    if ref.problem is not None:
        return Skipped(ref.key, ref.problem)
    try:
        sample = source.load(ref)
        candidates = codec.candidates(sample)
        candidate_metrics = [measure(metric_names, sample, codec, data) for _, data in candidates]
        attachments = record.attachments_of(sample)
        payload_members, extra_payload = [codec.extension], 0
        for name, signal in sorted(sample.extra_audio.items()):
            member = f"{name}.{codec.extension}"
            if member in attachments:
                raise CodecError(f"{member} would be both a lossless reference and a codec bitstream")
            extra = SourceSample(
                key=f"{sample.key}/{name}",
                audio=signal,
                sample_rate=sample.sample_rate,
                audio_bit_depth=sample.audio_bit_depth,
            )
            attachments[member] = codec.encode(extra)
            payload_members.append(member)
            extra_payload += len(attachments[member])
    except (SourceError, CodecError) as exc:
        return Skipped(ref.key, reason_text(exc))
    pixels = seconds = audio_samples = 0
    if sample.image is not None:
        pixels = sample.image.shape[0] * sample.image.shape[1]
    else:
        seconds = sample.audio.shape[1] / sample.sample_rate
        audio_samples = sample.audio.size
    return Encoded(
        key=sample.key,
        candidates=candidates,
        candidate_metrics=candidate_metrics,
        meta=record.describe(sample, codec.name, payload_members),
        attachments=attachments,
        extra_payload=extra_payload,
        source_sha256=sample.source_sha256,
        source_bytes=sample.source_bytes,
        raw_bits=sample.raw_bits(),
        pixels=pixels,
        seconds=seconds,
        audio_samples=audio_samples,
    )


def measure(metric_names: list[str], sample: SourceSample, codec: Codec, bitstream: bytes) -> dict[str, float]:
    """Quality metrics of one candidate bitstream against its source (empty without metrics)."""
    if not metric_names:
        return {}
    from .. import metrics

    if sample.image is not None:
        decoded = codec.decode(bitstream, {"channels": sample.image.shape[2]})
        return metrics.compute(list(metric_names), sample.image, decoded, None)
    channels, frames = sample.audio.shape
    decoded = codec.decode(bitstream, {"sample_rate": sample.sample_rate, "num_frames": frames, "channels": channels})
    return metrics.compute(list(metric_names), sample.audio, decoded, sample.sample_rate)


_worker_state: tuple[Source, Codec, list[str]] | None = None


def _init_worker(source: Source, codec_name: str, codec_options: dict[str, Any], metric_names: list[str]) -> None:
    global _worker_state
    import torch

    torch.set_num_threads(1)  # one process per core already
    _worker_state = (source, codecs.get(codec_name, **codec_options), metric_names)


def _work(batch: list[SourceRef]) -> list[Encoded | Skipped]:
    assert _worker_state is not None
    source, codec, metric_names = _worker_state
    return [encode_sample(source, codec, ref, metric_names) for ref in batch]


TASK_SAMPLES = 4  # source samples per worker task: amortises the pool's per-task cost (pickling, queues)


def encode_all(
    source: Source,
    codec: Codec,
    codec_options: dict[str, Any],
    refs: list[SourceRef],
    workers: int,
    metric_names: list[str],
) -> Iterator[Encoded | Skipped]:
    """Results in source order. With workers > 1, encoding runs in worker processes with a
    bounded window of tasks in flight, so memory does not grow with the dataset."""
    if workers <= 1 or len(refs) < 2:
        for ref in refs:
            yield encode_sample(source, codec, ref, metric_names)
        return
    # fork is fast, but a parent that has run torch ops (a neural codec's model) leaves
    # OpenMP thread pools that deadlock in forked children: spawn fresh processes then.
    context = multiprocessing.get_context(
        "fork" if sys.platform.startswith("linux") and not codec.uses_weights else "spawn"
    )
    size = 1 if codec.uses_weights else TASK_SAMPLES  # neural samples are slow enough on their own
    with context.Pool(
        workers, initializer=_init_worker, initargs=(source, codec.name, codec_options, metric_names)
    ) as pool:
        window: deque = deque()
        for start in range(0, len(refs), size):
            window.append(pool.apply_async(_work, (refs[start : start + size],)))
            if len(window) >= 4 * workers:
                yield from window.popleft().get()
        while window:
            yield from window.popleft().get()
