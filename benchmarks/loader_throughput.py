"""Image loader throughput against the decode limit and the naive webdataset path.

Prints, measured side by side in one run on the same shards:
  limit   = W x single-thread raw decode rate of the same bitstreams held in memory
  threads = lossyds.open_dataset(decode_threads=W) + torch DataLoader(num_workers=0): the
            recommended path for images (decoders release the GIL; no pixels cross processes)
  workers = lossyds.open_dataset + torch DataLoader(num_workers=W)
  naive   = webdataset .decode("pil") + ToTensor with DataLoader(num_workers=W)
  stacked = the threads path with torch's default_collate stacking the images (for the
            README's advice to crop before collating; not a target)
All paths yield full-size decoded tensors, batch 32 (lists of them, except `stacked`). Targets (issue 5): the recommended
path >= 0.75 x limit and >= 2 x naive. Exit 1 when missed.

    python benchmarks/loader_throughput.py --workers 2 --images 512
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_photo_shards, make_photo_folder  # noqa: E402

import lossyds  # noqa: E402
from lossyds import codecs  # noqa: E402


def collate_list(batch):
    return batch


def raw_decode_rate(directory: Path, manifest: dict, seconds: float) -> float:
    codec = codecs.from_manifest(manifest["codec"])
    ext = manifest["codec"]["extension"]
    blobs = []
    for shard in manifest["shards"]:
        with tarfile.open(directory / shard["path"]) as tar:
            for info in tar:
                if info.name.endswith("." + ext):
                    blobs.append(tar.extractfile(info).read())
    meta = {"channels": 3}
    torch.set_num_threads(1)

    def run() -> int:
        for blob in blobs:
            codec.decode(blob, meta)
        return len(blobs)

    run()  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += run()
    return count / (time.perf_counter() - start)


def loader_rate(loader, epochs: int) -> float:
    iterator_count = 0
    for batch in loader:  # warm-up epoch: worker start-up is not throughput
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            iterator_count += len(batch) if isinstance(batch, list) else len(batch["key"])
    return iterator_count / (time.perf_counter() - start)


def image_only(sample: dict) -> dict:
    return {"key": sample["key"], "image": sample["image"]}


def naive_rate(directory: Path, manifest: dict, workers: int, batch: int, epochs: int) -> float:
    import webdataset as wds
    from torchvision.transforms.functional import pil_to_tensor

    urls = [str(directory / s["path"]) for s in manifest["shards"]]
    ext = manifest["codec"]["extension"]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False, workersplitter=wds.split_by_worker).decode("pil").map(lambda s: {"key": s["__key__"], "image": pil_to_tensor(s[ext])})
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate_list, persistent_workers=True)
    return loader_rate(loader, epochs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--codecs", default="jpeg:5,jpeg:90,webp:0")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true", help="print only; never exit 1 (used by the test suite on tiny inputs)")
    args = parser.parse_args()

    source = make_photo_folder(args.workdir / "photos", args.images)
    missed = False
    print(f"workers={args.workers} images={args.images} (500x375) batch={args.batch}")
    print(f"{'shards':<10} {'limit/s':>8} {'threads/s':>10} {'workers/s':>10} {'naive/s':>8} {'threads/limit':>14} {'threads/naive':>14} {'workers/limit':>14} {'stacked/s':>10}")
    for spec in args.codecs.split(","):
        name, quality = spec.split(":")
        directory = args.workdir / f"{name}-q{quality}-{args.images}"
        manifest = build_photo_shards(source, directory, name, int(quality), shard_samples=max(1, args.images // 8))
        limit = args.workers * raw_decode_rate(directory, manifest, seconds=2.0)
        threaded = torch.utils.data.DataLoader(lossyds.open_dataset(directory, decode_threads=args.workers), batch_size=args.batch, num_workers=0, collate_fn=collate_list)
        ours = loader_rate(threaded, args.epochs)
        workers = torch.utils.data.DataLoader(lossyds.open_dataset(directory), batch_size=args.batch, num_workers=args.workers, collate_fn=collate_list, persistent_workers=True)
        multi = loader_rate(workers, args.epochs)
        naive = naive_rate(directory, manifest, args.workers, args.batch, args.epochs)
        stacking = torch.utils.data.DataLoader(lossyds.open_dataset(directory, decode_threads=args.workers, transform=image_only), batch_size=args.batch, num_workers=0)
        stacked = loader_rate(stacking, args.epochs)
        print(f"{name + ' q' + quality:<10} {limit:8.0f} {ours:10.0f} {multi:10.0f} {naive:8.0f} {ours / limit:14.2f} {ours / naive:14.2f} {multi / limit:14.2f} {stacked:10.0f}")
        missed |= ours < 0.75 * limit or ours < 2 * naive
    print("targets: threads/limit >= 0.75, threads/naive >= 2.0:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
