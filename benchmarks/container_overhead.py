"""Payload / bytes on disk for plain tar vs gzip-compressed tar shards.

Speech utterances with transcripts (the sample's five clips, copied) at Opus 6 kbps and
MP3 8 kbps. (EnCodec is left out here: with test weights its codes are far from random and
gzip shrinks the payload itself, which says nothing about trained weights.)
Target: the compact container reaches payload/disk >= 0.94. Exit 1 when missed.
For the record it also prints what zstandard (level 19) would give on the same plain-tar
shards, and how fast each decompresses (lossyds writes no .tar.zst: see the README).

    python benchmarks/container_overhead.py --copies 20
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_loader import make_speech_folder  # noqa: E402

from lossyds.build import BuildOptions, build  # noqa: E402


def zstd_figures(tar_shards: list[Path]) -> tuple[int, float, float]:
    """(zstd-19 bytes of these plain-tar shards, gunzip MB/s, unzstd MB/s of tar bytes out)."""
    import zstandard

    raw = [shard.read_bytes() for shard in tar_shards]
    gzipped = [gzip.compress(data, 9, mtime=0) for data in raw]
    zstded = [zstandard.ZstdCompressor(level=19).compress(data) for data in raw]

    def rate(decompress, blobs: list[bytes]) -> float:
        start, rounds = time.perf_counter(), 0
        while time.perf_counter() - start < 0.5:
            for blob in blobs:
                decompress(blob)
            rounds += 1
        return rounds * sum(len(d) for d in raw) / (time.perf_counter() - start) / 1e6

    return (
        sum(len(z) for z in zstded),
        rate(gzip.decompress, gzipped),
        rate(zstandard.ZstdDecompressor().decompress, zstded),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    source = make_speech_folder(args.workdir / f"speech-{args.copies}", args.copies)
    print(
        f"{'codec':<16} {'payload B':>10} {'tar B':>10} {'tar.gz B':>10} {'payload/tar':>12} {'payload/tar.gz':>15} {'payload/zstd-19':>16} {'gunzip MB/s':>12} {'unzstd MB/s':>12}"
    )
    missed = False
    for codec, rate in (("opus", {"kbps": 6}), ("mp3", {"kbps": 8})):
        sizes = {}
        for container in ("tar", "tar.gz"):
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
        zstd_size, gunzip_rate, unzstd_rate = zstd_figures(
            sorted((args.workdir / f"overhead-{codec}-tar-{args.copies}").glob("*.tar"))
        )
        label = f"{codec} {rate['kbps']:g} kbps"
        print(
            f"{label:<16} {payload:10d} {sizes['tar']:10d} {sizes['tar.gz']:10d} {payload / sizes['tar']:12.3f} {payload / sizes['tar.gz']:15.3f} {payload / zstd_size:16.3f} {gunzip_rate:12.0f} {unzstd_rate:12.0f}"
        )
        missed |= payload / sizes["tar.gz"] < 0.94
    print("target: payload/tar.gz >= 0.94:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
