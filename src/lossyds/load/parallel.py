"""Iteration helpers of the loader: chunks, ordered thread maps, the shuffle buffer, and error markers."""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ShardError

# Samples a decode thread takes at once (one decode_many call, one GIL release):
# benchmarks/decode_chunk.py compares chunk sizes; fewer thread handoffs per sample.
DECODE_CHUNK = 16

SKIPPED = object()  # a sample left out under on_error="skip"


class Raise:
    """A decode error travelling, in order, from a decode thread to the iterating thread."""

    __slots__ = ("error",)

    def __init__(self, error: ShardError):
        self.error = error


def decode_window(threads: int) -> int:
    """Chunks in flight for `threads` decode threads: one per thread plus up to two finished
    and waiting (the slack lets the consumer be bursty; capped so that with many threads and
    large images the decoded-but-unconsumed memory stays near threads x DECODE_CHUNK images)."""
    return threads + min(threads, 2)


def chunked(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def unchunked(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    """Samples of processed chunks, in order: skipped ones left out, a Raise raised."""
    for chunk in chunks:
        for sample in chunk:
            if sample is SKIPPED:
                continue
            if type(sample) is Raise:
                raise sample.error
            yield sample


def threaded_map(
    function: Callable[[Any], Any], items: Iterator[Any], threads: int, window: int | None = None
) -> Iterator[Any]:
    """Ordered map over a thread pool, with at most `window` items in flight (default 2 x threads).

    The loader's items are chunks of DECODE_CHUNK samples (amortising the pool's per-task
    cost). Image decoders (torchvision's libjpeg-turbo / libwebp / libpng) release the GIL,
    for a whole chunk at once through the codecs' `decode_many`, so threads decode in
    parallel into memory this process owns: no pixels cross a process boundary, which is
    what caps multi-process loaders on small machines."""
    with ThreadPoolExecutor(threads, thread_name_prefix="lossyds-decode") as pool:
        in_flight: deque = deque()
        limit = window or 2 * threads
        for item in items:
            in_flight.append(pool.submit(function, item))
            if len(in_flight) >= limit:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def shuffled(stream: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
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
