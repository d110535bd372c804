"""Build stage 2: read one source sample, encode it, describe its record; in parallel processes.

Neural codecs encode in batches: their analysis transform runs batched (on `--device`), their
entropy coding per sample on CPU, as the decoder decodes (docs/codecs.md, "Batched encoding")."""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import codecs, record
from ..codecs.base import Codec
from ..errors import CodecError, SourceError, UsageError, reason_text
from ..sources import Source, SourceRef
from ..types import SourceSample

if TYPE_CHECKING:
    import torch


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
        return describe(sample, codec, codec.candidates(sample), metric_names)
    except (SourceError, CodecError) as exc:
        return Skipped(ref.key, reason_text(exc))


def describe(
    sample: SourceSample, codec: Codec, candidates: list[tuple[dict[str, Any], bytes]], metric_names: list[str]
) -> Encoded:
    """An encoded sample's record: its metrics, lossless attachments and encoded extra signals."""
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


# -- batched neural encoding: the analysis batched on a device, entropy coding per sample --------


def encode_settings(codec: Codec, device: str, encode_batch: int) -> torch.device:
    """Check --device and --encode-batch against the codec; the torch device the analysis runs on."""
    import torch

    if encode_batch < 1:
        raise UsageError(f"--encode-batch must be at least 1 (got {encode_batch}).")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"--device {device!r} is not a torch device: {exc}") from exc
    if (target.type != "cpu" or encode_batch > 1) and not getattr(codec, "batched_analysis", False):
        raise UsageError(
            f"--device and --encode-batch apply to neural codecs; {codec.name} encodes on the CPU one sample at a time."
        )
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device here; use --device cpu.")
    return target


def load_input(source: Source, codec: Codec, ref: SourceRef) -> tuple[SourceSample, Any] | Skipped:
    """Read one source sample and make its model input (on CPU); failures become a Skipped."""
    if ref.problem is not None:
        return Skipped(ref.key, ref.problem)
    try:
        sample = source.load(ref)
        return sample, codec.analysis_input(sample)
    except (SourceError, CodecError) as exc:
        return Skipped(ref.key, reason_text(exc))


def finish_analysed(codec: Codec, sample: SourceSample, analysis: Any, metric_names: list[str]) -> Encoded | Skipped:
    """Entropy-code one analysed sample on CPU (as the decoder decodes it) and describe its record."""
    try:
        return describe(sample, codec, [({}, codec.entropy_code(sample, analysis))], metric_names)
    except (SourceError, CodecError) as exc:
        return Skipped(sample.key, reason_text(exc))


def analyse_loaded(codec: Codec, loaded: list[tuple[SourceSample, Any] | Skipped], device: Any) -> list[Any]:
    """`codec.analyse` of the loaded inputs, one result per entry of `loaded` (a Skipped stays;
    a CodecError of the batched analysis skips every sample of the batch, naming the reason)."""
    ready = [item for item in loaded if not isinstance(item, Skipped)]
    try:
        analyses = iter(codec.analyse([model_input for _, model_input in ready], device))
    except CodecError as exc:
        return [item if isinstance(item, Skipped) else Skipped(item[0].key, reason_text(exc)) for item in loaded]
    return [item if isinstance(item, Skipped) else next(analyses) for item in loaded]


def encode_batch(
    source: Source, codec: Codec, refs: list[SourceRef], metric_names: list[str], device: Any = "cpu"
) -> list[Encoded | Skipped]:
    """Encode `refs` in this process: one batched analysis on `device`, the rest per sample."""
    loaded = [load_input(source, codec, ref) for ref in refs]
    analysed = analyse_loaded(codec, loaded, device)
    return [
        result if isinstance(result, Skipped) else finish_analysed(codec, item[0], result, metric_names)
        for item, result in zip(loaded, analysed)
    ]


# -- worker processes --------------------------------------------------------------------------

_worker_state: tuple[Source, Codec, list[str]] | None = None


def _init_worker(source: Source, codec_name: str, codec_options: dict[str, Any], metric_names: list[str]) -> None:
    global _worker_state
    import torch

    torch.set_num_threads(1)  # one process per core already
    _worker_state = (source, codecs.get(codec_name, **codec_options), metric_names)


def _work(batch: list[SourceRef], batched: bool = False) -> list[Encoded | Skipped]:
    """Encode a task's samples in a worker (on CPU: workers never open an accelerator)."""
    assert _worker_state is not None
    source, codec, metric_names = _worker_state
    if batched:
        return encode_batch(source, codec, batch, metric_names)
    return [encode_sample(source, codec, ref, metric_names) for ref in batch]


def _load(ref: SourceRef) -> tuple[SourceSample, Any] | Skipped:
    assert _worker_state is not None
    return load_input(_worker_state[0], _worker_state[1], ref)


def _finish(sample: SourceSample, analysis: Any) -> Encoded | Skipped:
    assert _worker_state is not None
    return finish_analysed(_worker_state[1], sample, analysis, _worker_state[2])


TASK_SAMPLES = 4  # source samples per worker task: amortises the pool's per-task cost (pickling, queues)


def encode_all(
    source: Source,
    codec: Codec,
    codec_options: dict[str, Any],
    refs: list[SourceRef],
    workers: int,
    metric_names: list[str],
    device: str = "cpu",
    encode_batch_size: int = 1,
) -> Iterator[Encoded | Skipped]:
    """Results in source order. With workers > 1, encoding runs in worker processes with a
    bounded window of tasks in flight, so memory does not grow with the dataset.

    Neural codecs encode `encode_batch_size` samples per task, their analysis batched. On a
    device other than the CPU, the analysis runs in this process only (one CUDA context, one
    model copy on the device), and the workers read the sources and entropy-code on CPU."""
    target = encode_settings(codec, device, encode_batch_size)
    batched = bool(getattr(codec, "batched_analysis", False))
    if workers <= 1 or len(refs) < 2:
        if not batched:
            for ref in refs:
                yield encode_sample(source, codec, ref, metric_names)
            return
        for start in range(0, len(refs), encode_batch_size):
            yield from encode_batch(source, codec, refs[start : start + encode_batch_size], metric_names, target)
        return
    # fork is fast, but a parent that has run torch ops (a neural codec's model) leaves
    # OpenMP thread pools that deadlock in forked children: spawn fresh processes then.
    context = multiprocessing.get_context(
        "fork" if sys.platform.startswith("linux") and not codec.uses_weights else "spawn"
    )
    size = (encode_batch_size if batched else 1) if codec.uses_weights else TASK_SAMPLES
    with context.Pool(
        workers, initializer=_init_worker, initargs=(source, codec.name, codec_options, metric_names)
    ) as pool:
        if target.type != "cpu":
            yield from _parent_analysis(pool, codec, refs, size, workers, target)
            return
        window: deque = deque()
        for start in range(0, len(refs), size):
            window.append(pool.apply_async(_work, (refs[start : start + size], batched)))
            if len(window) >= 4 * workers:
                yield from window.popleft().get()
        while window:
            yield from window.popleft().get()


def _parent_analysis(
    pool: Any, codec: Codec, refs: list[SourceRef], size: int, workers: int, device: Any
) -> Iterator[Encoded | Skipped]:
    """Workers load batch k+1 while this process analyses batch k on `device`; each analysed
    sample goes back to a worker for entropy coding. Results in source order; at most about
    4 x workers samples wait for entropy coding, and two batches are loading."""
    chunks = [refs[start : start + size] for start in range(0, len(refs), size)]
    loading: deque = deque()
    coding: deque = deque()  # per sample: a Skipped, or the worker's pending result
    for chunk in chunks[:2]:
        loading.append([pool.apply_async(_load, (ref,)) for ref in chunk])
    following = 2
    while loading:
        loaded = [pending.get() for pending in loading.popleft()]
        if following < len(chunks):
            loading.append([pool.apply_async(_load, (ref,)) for ref in chunks[following]])
            following += 1
        for item, result in zip(loaded, analyse_loaded(codec, loaded, device)):
            coding.append(result if isinstance(result, Skipped) else pool.apply_async(_finish, (item[0], result)))
        while len(coding) > 4 * workers:
            yield _settled(coding.popleft())
    while coding:
        yield _settled(coding.popleft())


def _settled(entry: Any) -> Encoded | Skipped:
    return entry if isinstance(entry, Skipped) else entry.get()
