"""Loader memory on image shards: per-process RSS, and whether it grows across an epoch.

For W DataLoader worker processes (each worker's RSS, read by the worker itself from
/proc/self/status every few samples) and for the decode-threads path (the training
process's RSS), over two epochs of ImageNet-sized photos (500x375, full-size tensors,
batch 32), prints the peak RSS of each process and the ratio of its RSS late in the
second epoch to its RSS early in the first. Targets: peak < 1 GB per worker,
growth <= 1.10. Exit 1 when missed (--no-check: 0).

    python benchmarks/loader_memory.py --workers 2 --images 1024
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_photo_shards, make_photo_folder  # noqa: E402

import lossyds  # noqa: E402

PEAK_TARGET_MB = 1024
GROWTH_TARGET = 1.10


def rss_mb() -> float:
    """This process's resident set size in MB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class TagRss:
    """Transform: every `every` samples, tag the sample with (process id, RSS in MB)."""

    def __init__(self, every: int):
        self.every = every
        self.count = 0

    def __call__(self, sample: dict) -> dict:
        self.count += 1
        if self.count % self.every == 0:
            worker = torch.utils.data.get_worker_info()
            sample["rss"] = (worker.id if worker is not None else -1, rss_mb())
        return sample


def keep_rss(batch: list[dict]) -> list[tuple[int, float]]:
    """collate_fn: drop the pixels, keep the RSS tags (the images are decoded all the same)."""
    return [s["rss"] for s in batch if "rss" in s]


def keep_images(batch: list[dict]) -> list[dict]:
    """collate_fn of the decode-threads path: the batch as a list, images and all (held until
    the next batch, as a training step holds its batch)."""
    return batch


def measure(directory: Path, workers: int, threads: int, epochs: int = 2) -> dict[int, list[float]]:
    """RSS readings per process (worker id, or -1 for the training process), in order.
    Through lossyds.DataLoader, the recommended path."""
    dataset = lossyds.open_dataset(directory, transform=TagRss(every=16), decode_threads=threads)
    loader = lossyds.DataLoader(
        dataset,
        batch_size=32,
        num_workers=workers,
        collate_fn=keep_rss if workers else keep_images,
        persistent_workers=workers > 0,
    )
    readings: dict[int, list[float]] = {}
    for _ in range(epochs):
        for batch in loader:
            tags = batch if workers else [s["rss"] for s in batch if "rss" in s]
            for process, value in tags:
                readings.setdefault(process, []).append(value)
            if workers == 0:
                readings.setdefault(-1, []).append(rss_mb())
    return readings


def report(label: str, readings: dict[int, list[float]]) -> bool:
    missed = False
    for process, values in sorted(readings.items()):
        early = values[max(0, len(values) // 10)]
        late = values[-1]
        peak = max(values)
        growth = late / early
        name = "training process" if process < 0 else f"worker {process}"
        print(
            f"{label:<24} {name:<17} readings {len(values):4d}  early {early:7.0f} MB  late {late:7.0f} MB  peak {peak:7.0f} MB  late/early {growth:5.2f}"
        )
        missed |= peak >= PEAK_TARGET_MB or growth > GROWTH_TARGET
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--codec", default="jpeg:90")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    name, quality = args.codec.split(":")
    source = make_photo_folder(args.workdir / "photos", args.images)
    directory = args.workdir / f"{name}-q{quality}-{args.images}"
    build_photo_shards(source, directory, name, int(quality), shard_samples=max(1, args.images // 8))
    print(
        f"{args.images} photos 500x375, {name} q{quality}, 2 epochs, batch 32; targets: peak < {PEAK_TARGET_MB} MB, late/early <= {GROWTH_TARGET}"
    )
    missed = report(f"{args.workers} DataLoader workers", measure(directory, args.workers, 0))
    missed |= report(f"decode_threads={args.workers}", measure(directory, 0, args.workers))
    print("targets:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
