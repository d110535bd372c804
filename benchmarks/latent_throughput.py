"""Latent output against full decoding, side by side: samples/s of open_dataset(DIR,
output="latent") and of open_dataset(DIR) on the same build, in alternating rounds, on CPU.

EnCodec 24 kHz at 6 kbps over speech, and bmshj2018-hyperprior quality 2 over 256x256 photo
crops, both with test weights (random init, seed 0): the synthesis network's cost does not
depend on its weights, so the ratio is what this script is for. The latent path skips the
synthesis, which dominates decoding. Target: latent/decoded >= 2 for both (exit 1 when missed).

    python benchmarks/latent_throughput.py --copies 4 --images 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_loader import make_speech_folder  # noqa: E402
from common import make_photo_folder  # noqa: E402

import lossyds  # noqa: E402
from lossyds.builder import BuildOptions, build  # noqa: E402

TARGET = 2.0


def samples_per_second(directory: Path, output: str) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in lossyds.open_dataset(directory, output=output))
    return count / (time.perf_counter() - start)


def compare(directory: Path, rounds: int) -> tuple[float, float]:
    """(median latent samples/s, median decoded samples/s) over alternating rounds."""
    samples_per_second(directory, "latent")  # warm: model load, page cache
    latent, decoded = [], []
    for _ in range(rounds):
        latent.append(samples_per_second(directory, "latent"))
        decoded.append(samples_per_second(directory, "decoded"))
    return statistics.median(latent), statistics.median(decoded)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4, help="copies of each sample utterance")
    parser.add_argument("--images", type=int, default=32, help="256x256 photo crops")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # one core, as one DataLoader worker has
    speech = make_speech_folder(args.workdir / f"latent-speech-{args.copies}", args.copies)
    photos = make_photo_folder(args.workdir / f"latent-photos-{args.images}", args.images, size=(256, 256))
    runs = [
        ("encodec 6 kbps", "encodec", {"kbps": 6, "weights": "random:0"}, speech),
        ("hyperprior q2", "bmshj2018-hyperprior", {"quality": 2, "weights": "random:0"}, photos),
    ]
    print(f"{'codec':<16} {'samples':>8} {'latent/s':>10} {'decoded/s':>10} {'latent/decoded':>15}")
    missed = False
    for label, codec, options, root in runs:
        out = args.workdir / f"latent-{codec}-{args.copies}-{args.images}"
        if not (out / "manifest.json").exists():
            build(
                BuildOptions(
                    codec=codec,
                    out=out,
                    codec_options=options,
                    dataset="audiofolder" if codec == "encodec" else "imagefolder",
                    root=root,
                    split="train",
                    force=True,
                )
            )
        count = sum(1 for _ in lossyds.open_dataset(out, output="latent"))
        latent, decoded = compare(out, args.rounds)
        ratio = latent / decoded
        missed |= ratio < TARGET
        print(f"{label:<16} {count:8d} {latent:10.1f} {decoded:10.1f} {ratio:15.2f}")
    print(f"target: latent/decoded >= {TARGET:g} for both:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
