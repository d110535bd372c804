"""Image loader throughput against the decode limit and the naive webdataset path.

Prints, measured side by side in one run on the same shards:
  limit   = W x single-thread raw decode rate of the same bitstreams held in memory
  threads = lossyds.open_dataset(decode_threads=W) + lossyds.DataLoader(num_workers=0): the
            recommended path for images (decoders release the GIL; no pixels cross processes)
  bare    = W plain threads decoding the in-memory bitstreams (no loader at all): what W
            threads can reach on this machine at this moment (context, not a target);
            threads/bare is the loader's own efficiency, whatever the machine's scaling
  kept    = W x one thread decoding the same bytes while holding its last 2 x batch images,
            as anything that hands out batches must (context, not a target): the limit's
            outputs are dropped at once, so it rewrites one buffer that stays in the core's
            cache; kept/limit is what holding decoded images costs on this CPU
  workers = lossyds.open_dataset + torch DataLoader(num_workers=W)
  naive   = webdataset .decode("pil") + ToTensor with DataLoader(num_workers=W)
  stacked = the threads path with torch's default_collate stacking the images (for the
            README's advice to crop before collating; not a target)
  stacked-cl = the same with lossyds.collate_channels_last (a channels-last batch)
limit, threads, bare and kept are measured in --rounds interleaved rounds of at least --seconds
each, and at least one pass over the photos (one loader epoch, thread pool start and drain
included). These machines are shared and noisy: a ratio of two figures taken seconds apart
swings by 20%. The default is many short rounds (40 of about 0.1-0.2 s a figure, so a
round's figures are taken within a second of each other) rather than a few long ones.
threads/limit is the median of the per-round ratios, with its range. All paths yield
full-size decoded tensors, batch 32 (lists of them, except `stacked`).
The threads path's process CPU and minor page faults per sample are printed too; --malloc-ab
also runs the rounds in a child process with LOSSYDS_TUNE_MALLOC=0 (glibc malloc left alone,
see lossyds.allocator) and prints its threads/limit, CPU and faults beside.
Targets: the recommended path >= 0.75 x limit (median) and >= 2 x naive. Exit 1 when missed.

    python benchmarks/loader_throughput.py --workers 2 --images 512 --malloc-ab
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_photo_shards, make_photo_folder  # noqa: E402

import lossyds  # noqa: E402
from lossyds import allocator, codecs  # noqa: E402


def collate_list(batch):
    return batch


def load_bitstreams(directory: Path, manifest: dict) -> list[bytes]:
    """Every sample's bitstream, read out of the shards with tarfile (the limit's input, in memory)."""
    ext = manifest["codec"]["extension"]
    blobs = []
    for shard in manifest["shards"]:
        with tarfile.open(directory / shard["path"]) as tar:
            for info in tar:
                if info.name.endswith("." + ext):
                    blobs.append(tar.extractfile(info).read())
    return blobs


def raw_decode_rate(codec, blobs: list[bytes], seconds: float, keep: int = 0) -> float:
    """Images/s of one thread decoding the in-memory bitstreams in a tight loop: outputs
    dropped at once (keep=0, the limit), or the last `keep` of them held (`kept`)."""
    meta = {"channels": 3}
    held: collections.deque = collections.deque(maxlen=keep or None)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for blob in blobs:
            image = codec.decode(blob, meta)
            if keep:
                held.append(image)
        count += len(blobs)
    return count / (time.perf_counter() - start)


def bare_threads_rate(codec, blobs: list[bytes], threads: int, seconds: float) -> float:
    """Images/s of `threads` plain threads, each decoding its share of the bitstreams in a loop."""
    meta = {"channels": 3}
    counts = [0] * threads
    start = time.perf_counter()

    def run(index: int) -> None:
        part = blobs[index::threads]
        while time.perf_counter() - start < seconds:
            for blob in part:
                codec.decode(blob, meta)
            counts[index] += len(part)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def count(batch) -> int:
    return len(batch) if isinstance(batch, list) else len(batch["key"])


def loader_run(loader, epochs: int = 1, seconds: float = 0.0) -> tuple[int, float]:
    """(samples, seconds) over at least `epochs` whole epochs and at least `seconds` (call warm_up first)."""
    samples, done, start = 0, 0, time.perf_counter()
    while done < epochs or time.perf_counter() - start < seconds:
        for batch in loader:
            samples += count(batch)
        done += 1
    return samples, time.perf_counter() - start


def loader_rate(loader, epochs: int = 1, seconds: float = 0.0) -> float:
    samples, elapsed = loader_run(loader, epochs, seconds)
    return samples / elapsed


def process_cpu_and_faults() -> tuple[float, int]:
    """(user + system CPU seconds, minor page faults) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def warm_up(loader) -> None:
    for _ in loader:  # worker start-up and first shard opening are not throughput
        pass


def image_only(sample: dict) -> dict:
    return {"key": sample["key"], "image": sample["image"]}


def naive_rate(directory: Path, manifest: dict, workers: int, batch: int, epochs: int) -> float:
    import webdataset as wds
    from torchvision.transforms.functional import pil_to_tensor

    urls = [str(directory / s["path"]) for s in manifest["shards"]]
    ext = manifest["codec"]["extension"]
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False, workersplitter=wds.split_by_worker)
        .decode("pil")
        .map(lambda s: {"key": s["__key__"], "image": pil_to_tensor(s[ext])})
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, collate_fn=collate_list, persistent_workers=True
    )
    warm_up(loader)
    return loader_rate(loader, epochs)


def rounds(directory: Path, manifest: dict, workers: int, batch: int, count_rounds: int, seconds: float) -> dict:
    """limit, threads, bare and kept measured in interleaved rounds: per-round figures and ratios."""
    codec = codecs.from_manifest(manifest["codec"])
    blobs = load_bitstreams(directory, manifest)
    loader = lossyds.DataLoader(
        lossyds.open_dataset(directory, decode_threads=workers),
        batch_size=batch,
        num_workers=0,
        collate_fn=collate_list,
    )
    warm_up(loader)
    raw_decode_rate(codec, blobs, 0.0)
    out: dict = {"limit": [], "threads": [], "bare": [], "kept": []}
    samples, cpu, faults = 0, 0.0, 0
    for _ in range(count_rounds):
        out["limit"].append(workers * raw_decode_rate(codec, blobs, seconds))
        cpu_before, faults_before = process_cpu_and_faults()
        count_now, elapsed = loader_run(loader, 1, seconds)
        cpu_after, faults_after = process_cpu_and_faults()
        out["threads"].append(count_now / elapsed)
        samples, cpu, faults = samples + count_now, cpu + cpu_after - cpu_before, faults + faults_after - faults_before
        out["bare"].append(bare_threads_rate(codec, blobs, workers, seconds))
        out["kept"].append(workers * raw_decode_rate(codec, blobs, seconds, keep=2 * batch))
    out["cpu_us"] = 1e6 * cpu / samples  # the threads path's process CPU per sample (all threads)
    out["faults"] = faults / samples  # and its minor page faults per sample
    out["ratio"] = [t / limit for t, limit in zip(out["threads"], out["limit"])]
    out["bare_ratio"] = [b / limit for b, limit in zip(out["bare"], out["limit"])]
    out["of_bare"] = [t / b for t, b in zip(out["threads"], out["bare"])]
    out["kept_ratio"] = [k / limit for k, limit in zip(out["kept"], out["limit"])]
    out["of_kept"] = [t / k for t, k in zip(out["threads"], out["kept"])]
    return out


def untuned_rounds(args, spec: str) -> dict:
    """The rounds (ratios, CPU and faults a sample) in a child process that leaves glibc malloc alone."""
    command = [
        sys.executable,
        __file__,
        "--rounds-only",
        "--codecs",
        spec,
        "--workers",
        str(args.workers),
        "--images",
        str(args.images),
        "--batch",
        str(args.batch),
        "--rounds",
        str(args.rounds),
        "--seconds",
        str(args.seconds),
        "--workdir",
        str(args.workdir),
    ]
    result = subprocess.run(
        command, env={**os.environ, "LOSSYDS_TUNE_MALLOC": "0"}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs measured for the workers, naive and stacked paths"
    )
    parser.add_argument("--rounds", type=int, default=40, help="interleaved limit / threads / bare / kept rounds")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.1,
        help="least time of each measurement in a round (at least one pass / epoch)",
    )
    parser.add_argument("--codecs", default="jpeg:5,jpeg:90,webp:0")
    parser.add_argument(
        "--malloc-ab",
        action="store_true",
        help="also measure the threads path with LOSSYDS_TUNE_MALLOC=0 (child process)",
    )
    parser.add_argument("--rounds-only", action="store_true", help=argparse.SUPPRESS)  # the --malloc-ab child
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument(
        "--no-check", action="store_true", help="print only; never exit 1 (used by the test suite on tiny inputs)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    source = make_photo_folder(args.workdir / "photos", args.images)
    if not args.rounds_only:
        print(
            f"workers={args.workers} images={args.images} (500x375) batch={args.batch} rounds={args.rounds} x {args.seconds} s"
        )
        print(
            f"{'shards':<9} {'limit/s':>7} {'threads/s':>9} {'threads/limit':>18} {'bare/limit':>10} {'threads/bare':>12} {'kept/limit':>10} {'threads/kept':>12} {'untuned/limit':>13} {'naive/s':>7} {'threads/naive':>13} {'workers/limit':>13} {'stacked/s':>9} {'stacked-cl/s':>12}"
        )
    missed: list[str] = []
    malloc_rows: list[str] = []
    for spec in args.codecs.split(","):
        name, quality = spec.split(":")
        directory = args.workdir / f"{name}-q{quality}-{args.images}"
        manifest = build_photo_shards(source, directory, name, int(quality), shard_samples=max(1, args.images // 8))
        measured = rounds(directory, manifest, args.workers, args.batch, args.rounds, args.seconds)
        if args.rounds_only:
            print(json.dumps({key: measured[key] for key in ("ratio", "cpu_us", "faults")}))
            continue
        untuned_run = untuned_rounds(args, spec) if args.malloc_ab else None
        untuned = spread(untuned_run["ratio"]) if untuned_run else "-"
        malloc_rows.append(
            f"{name + ' q' + quality:<9} {measured['faults']:14.1f} {measured['cpu_us']:15.0f} "
            + (f"{untuned_run['faults']:16.1f} {untuned_run['cpu_us']:17.0f}" if untuned_run else "")
        )
        workers = torch.utils.data.DataLoader(
            lossyds.open_dataset(directory),
            batch_size=args.batch,
            num_workers=args.workers,
            collate_fn=collate_list,
            persistent_workers=True,
        )
        warm_up(workers)
        multi = loader_rate(workers, args.epochs)
        naive = naive_rate(directory, manifest, args.workers, args.batch, args.epochs)
        stacking = lossyds.DataLoader(
            lossyds.open_dataset(directory, decode_threads=args.workers, transform=image_only),
            batch_size=args.batch,
            num_workers=0,
        )
        warm_up(stacking)
        stacked = loader_rate(stacking, args.epochs)
        stacking_cl = lossyds.DataLoader(
            lossyds.open_dataset(directory, decode_threads=args.workers, transform=image_only),
            batch_size=args.batch,
            num_workers=0,
            collate_fn=lossyds.collate_channels_last,
        )
        warm_up(stacking_cl)
        stacked_cl = loader_rate(stacking_cl, args.epochs)
        limit, threads = statistics.median(measured["limit"]), statistics.median(measured["threads"])
        ratio = statistics.median(measured["ratio"])
        print(
            f"{name + ' q' + quality:<9} {limit:7.0f} {threads:9.0f} {spread(measured['ratio']):>18} {statistics.median(measured['bare_ratio']):10.2f} {statistics.median(measured['of_bare']):12.2f} "
            f"{statistics.median(measured['kept_ratio']):10.2f} {statistics.median(measured['of_kept']):12.2f} {untuned:>13} "
            f"{naive:7.0f} {threads / naive:13.2f} {multi / limit:13.2f} {stacked:9.0f} {stacked_cl:12.0f}"
        )
        if ratio < 0.75:
            missed.append(f"{name} q{quality} threads/limit {ratio:.3f}")
        if threads < 2 * naive:
            missed.append(f"{name} q{quality} threads/naive {threads / naive:.3f}")
    if not args.rounds_only:
        tuned = "tuned" if allocator.keep_freed_buffers() else "as is"  # this process's malloc (see lossyds.allocator)
        print(
            f"threads path, per sample: {tuned + ' faults':>14} {tuned + ' cpu (us)':>15}"
            + (f" {'untuned faults':>16} {'untuned cpu (us)':>17}" if args.malloc_ab else "")
        )
        for row in malloc_rows:
            print(f"  {row}")
        print(
            "targets: threads/limit (median) >= 0.75, threads/naive >= 2.0:",
            f"MISSED ({'; '.join(missed)})" if missed else "met",
        )
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
