"""JPEG builds decoded in batches on a GPU (torchvision's nvJPEG path) against the CPU loader.

For ImageNet-sized (500x375) JPEG builds at quality 5 and 90, prints images per second of:

  - one CPU thread decoding with torchvision.io.decode_jpeg (the loader's per-sample decoder);
  - lossyds.make_loader on CPU with W decode threads (the loader as users run it);
  - torchvision.io.decode_jpeg(batch, device=DEVICE) on batches of B bitstreams read from the
    shards (the bytes only: reading them is measured apart, as "read"), synchronised per batch;

and the ratio of the batched device decode to the CPU loader, with the largest pixel difference
between device and CPU decodes (nvJPEG's IDCT may round differently from libjpeg-turbo's).

    python benchmarks/nvjpeg_decode.py --device cuda --images 2048 --batch 64,256
    python benchmarks/nvjpeg_decode.py --device cpu --images 64 --batch 16   # smoke run (no nvJPEG)
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
import torchvision
from torchvision.io import decode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_seconds, build_photo_shards, make_photo_folder  # noqa: E402

import lossyds  # noqa: E402


def read_bitstreams(build: Path) -> list[torch.Tensor]:
    """Every sample's .jpg member as a uint8 tensor, in shard order: the bytes a batched decoder gets."""
    streams = []
    for shard in sorted(build.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    data = tar.extractfile(member).read()
                    streams.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return streams


def measure(build: Path, device: str, batches: list[int], threads: int) -> dict:
    streams = read_bitstreams(build)
    count = len(streams)
    read_s = best_seconds(lambda: read_bitstreams(build), repeat=1, warm_up=False)
    one_thread = count / best_seconds(lambda: [decode_jpeg(s) for s in streams], warm_up=False)
    loader = lossyds.make_loader(build, batch_size=32, collate_fn=list, cores=threads)
    loader_rate = count / best_seconds(lambda: sum(len(b) for b in loader), repeat=2, warm_up=False)
    result = {
        "images": count,
        "read_bitstreams_per_s": count / read_s,
        "cpu_one_thread_per_s": one_thread,
        f"cpu_loader_{threads}_threads_per_s": loader_rate,
    }
    reference = [decode_jpeg(s) for s in streams[:64]]
    for batch in batches:
        chunks = [streams[i : i + batch] for i in range(0, count, batch)]

        def run(chunks: list[list[torch.Tensor]] = chunks) -> None:
            for chunk in chunks:
                decode_jpeg(chunk, device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        rate = count / best_seconds(run)  # the warm-up run creates nvJPEG's handles and the CUDA context
        result[f"device_batch_{batch}_per_s"] = rate
        result[f"device_batch_{batch}_vs_cpu_loader"] = rate / loader_rate
    decoded = decode_jpeg(streams[:64], device=device)
    result["max_abs_pixel_diff_vs_cpu"] = max(
        int((d.cpu().int() - r.int()).abs().max()) for d, r in zip(decoded, reference)
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", default="64,256")
    parser.add_argument("--threads", type=int, default=2, help="decode threads of the CPU loader")
    parser.add_argument("--qualities", default="5,90")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the photos and builds go (a temporary folder)"
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batch.split(",")]
    figures = {"torch": torch.__version__, "torchvision": torchvision.__version__, "device": args.device}
    if args.device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        photos = make_photo_folder(Path(tmp) / "photos", args.images)
        for quality in (int(q) for q in args.qualities.split(",")):
            out = Path(tmp) / f"jpeg-q{quality}"
            build_photo_shards(photos, out, "jpeg", quality, shard_samples=512)
            figures[f"jpeg_q{quality}"] = measure(out, args.device, batches, args.threads)
            print(f"jpeg q{quality}:", json.dumps(figures[f"jpeg_q{quality}"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
