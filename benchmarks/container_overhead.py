"""Payload / bytes on disk for plain tar, gzip- and zstandard-compressed tar shards.

Speech utterances with transcripts (the sample's five clips, copied) at Opus 6 kbps and
MP3 8 kbps. (EnCodec is left out here: with test weights its codes are far from random and
gzip shrinks the payload itself, which says nothing about trained weights.)
Target: the compact container reaches payload/disk >= 0.94. Exit 1 when missed.
It also prints how fast lossyds's streaming readers decompress each (MB/s of tar bytes out).

    python benchmarks/container_overhead.py --copies 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_loader import make_speech_folder  # noqa: E402

from lossyds.builder import BuildOptions, build  # noqa: E402


def decompress_rate(shards: list[Path]) -> float:
    """MB/s of tar bytes out of lossyds's streaming decompression of these .tar.gz/.tar.zst shards."""
    from lossyds.shards.stream import gunzip, unzstd

    blobs = [shard.read_bytes() for shard in shards]
    decompress = gunzip if shards[0].name.endswith(".gz") else unzstd
    start, rounds, out = time.perf_counter(), 0, 0
    while time.perf_counter() - start < 0.5 or rounds == 0:
        for blob in blobs:
            out += len(decompress(blob, "bench")[0])
        rounds += 1
    return out / (time.perf_counter() - start) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    source = make_speech_folder(args.workdir / f"speech-{args.copies}", args.copies)
    print(
        f"{'codec':<16} {'payload B':>10} {'tar B':>10} {'tar.gz B':>10} {'tar.zst B':>10} {'payload/tar':>12} {'payload/tar.gz':>15} {'payload/tar.zst':>16} {'gunzip MB/s':>12} {'unzstd MB/s':>12}"
    )
    missed = False
    for codec, rate in (("opus", {"kbps": 6}), ("mp3", {"kbps": 8})):
        sizes = {}
        for container in ("tar", "tar.gz", "tar.zst"):
            out = args.workdir / f"overhead-{codec}-{container}-{args.copies}"
            manifest = build(
                BuildOptions(
                    codec=codec,
                    out=out,
                    codec_options=rate,
                    dataset="audiofolder",
                    root=source,
                    split="train",
                    shard_format=container,
                    force=True,
                )
            )
            sizes[container] = manifest["bits"]["container"] // 8
            payload = manifest["bits"]["payload"] // 8
        gunzip_rate, unzstd_rate = (
            decompress_rate(sorted((args.workdir / f"overhead-{codec}-{fmt}-{args.copies}").glob(f"*.{fmt}")))
            for fmt in ("tar.gz", "tar.zst")
        )
        label = f"{codec} {rate['kbps']:g} kbps"
        print(
            f"{label:<16} {payload:10d} {sizes['tar']:10d} {sizes['tar.gz']:10d} {sizes['tar.zst']:10d} {payload / sizes['tar']:12.3f} {payload / sizes['tar.gz']:15.3f} {payload / sizes['tar.zst']:16.3f} {gunzip_rate:12.0f} {unzstd_rate:12.0f}"
        )
        missed |= payload / sizes["tar.gz"] < 0.94
    print("target: payload/tar.gz >= 0.94:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
