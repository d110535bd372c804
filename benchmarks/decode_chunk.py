"""Decode-thread chunk size: the loader's images/s with each setting, alternating epoch by epoch.

The loader's decode threads take DECODE_CHUNK samples at a time (one decode_many call, one
GIL release) and keep decode_window(threads) chunks in flight. This script builds one loader
per chunk size and runs them one epoch each in turn, --pairs times (the order flips every
round), so slow drifts of this shared machine hit every setting alike; a median over a few
half-second rounds could not resolve a few percent here. It prints each setting's images/s
over all its epochs and its ratio to the first setting's (total and median of the per-round
ratios). Context for the choice of loader.DECODE_CHUNK, not a target: it always exits 0.

    python benchmarks/decode_chunk.py --chunks 8,16 --pairs 100
    python benchmarks/decode_chunk.py --codecs jpeg:90,webp:0 --collate channels-last
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_photo_shards, make_photo_folder  # noqa: E402
from loader_throughput import collate_list, image_only  # noqa: E402

import lossyds  # noqa: E402
from lossyds.load import parallel as loader_module  # noqa: E402

COLLATES = {"list": collate_list, "default": None, "channels-last": lossyds.collate_channels_last}


def epoch(loader) -> tuple[int, float]:
    """(samples, seconds) of one pass over the loader."""
    import time

    count, start = 0, time.perf_counter()
    for batch in loader:
        count += len(batch) if isinstance(batch, list) else len(batch["key"])
    return count, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", default="8,16", help="chunk sizes to compare; the first is the reference")
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=100, help="rounds: one epoch of every setting each")
    parser.add_argument("--codecs", default="jpeg:5")
    parser.add_argument(
        "--collate",
        choices=sorted(COLLATES),
        default="list",
        help="list: batches are lists of samples (as the loader target); default / channels-last: stacked in the main thread",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chunks = [int(c) for c in args.chunks.split(",")]
    source = make_photo_folder(args.workdir / "photos", args.images)
    collate = COLLATES[args.collate]
    print(
        f"threads={args.workers} images={args.images} (500x375) batch={args.batch} pairs={args.pairs} collate={args.collate} window=decode_window(threads)"
    )
    print(f"{'shards':<9} {'chunk':>5} {'images/s':>8} {'total vs ' + str(chunks[0]):>12} {'median pair':>11}")
    reference = loader_module.DECODE_CHUNK
    try:
        for spec in args.codecs.split(","):
            name, quality = spec.split(":")
            directory = args.workdir / f"{name}-q{quality}-{args.images}"
            build_photo_shards(source, directory, name, int(quality), shard_samples=max(1, args.images // 8))
            loaders = {}
            for chunk in chunks:
                dataset = lossyds.open_dataset(
                    directory, decode_threads=args.workers, transform=None if args.collate == "list" else image_only
                )
                loaders[chunk] = lossyds.DataLoader(
                    dataset, batch_size=args.batch, num_workers=0, **({"collate_fn": collate} if collate else {})
                )
                loader_module.DECODE_CHUNK = chunk
                epoch(loaders[chunk])  # warm-up: thread pool, shard indexes, first decodes
            totals = {chunk: [0, 0.0] for chunk in chunks}
            rates: dict[int, list[float]] = {chunk: [] for chunk in chunks}
            for round_index in range(args.pairs):
                for chunk in chunks if round_index % 2 == 0 else chunks[::-1]:
                    loader_module.DECODE_CHUNK = chunk  # read when an epoch starts
                    count, seconds = epoch(loaders[chunk])
                    totals[chunk][0] += count
                    totals[chunk][1] += seconds
                    rates[chunk].append(count / seconds)
            first = totals[chunks[0]][0] / totals[chunks[0]][1]
            for chunk in chunks:
                rate = totals[chunk][0] / totals[chunk][1]
                paired = statistics.median(a / b for a, b in zip(rates[chunk], rates[chunks[0]]))
                print(f"{name + ' q' + quality:<9} {chunk:5d} {rate:8.0f} {rate / first:12.3f} {paired:11.3f}")
    finally:
        loader_module.DECODE_CHUNK = reference
    return 0


if __name__ == "__main__":
    sys.exit(main())
