"""Build speed: P encoding processes vs one, vs a naive loop; peak memory vs dataset size.

Prints, side by side in one run on the same source:
  - JPEG q75 on 500x375 photos and Opus 6 kbps on speech: samples/s with --workers P and
    --workers 1, and the naive loop (Pillow save / PyAV encode per sample + webdataset.ShardWriter);
  - peak RSS of the build process tree at 1x and 4x the number of samples.
Targets: P/1 >= 1.7 on 2 cores; lossyds (P) >= naive; RSS flat (4x/1x <= 1.2).

    python benchmarks/build_speed.py --workers 2 --images 256
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_loader import make_speech_folder  # noqa: E402
from common import make_photo_folder  # noqa: E402


def lossyds_rate(args: list[str], out: Path) -> tuple[float, int]:
    """(samples/s, peak RSS in kB of the build and its workers) for one `lossyds build` run."""
    command = [
        sys.executable,
        "-c",
        "import resource,sys,runpy; sys.argv=['lossyds']+sys.argv[1:]; "
        "from lossyds.cli import main\ntry:\n main()\nexcept SystemExit: pass\n"
        "print('RSS', max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr)",
        "build",
        *args,
        "--out",
        str(out),
        "--force",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = json.loads((out / "build-info.json").read_text())["seconds"]  # the build itself, not Python start-up
    samples = json.loads((out / "manifest.json").read_text())["num_samples"]
    rss = int(result.stderr.rsplit("RSS", 1)[1].split()[0])
    return samples / elapsed, rss


def naive_jpeg(source: Path, out: Path) -> float:
    import webdataset as wds
    from PIL import Image

    files = sorted(source.rglob("*.png"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "naive-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for index, path in enumerate(files):
            buffer = io.BytesIO()
            Image.open(path).convert("RGB").save(buffer, "JPEG", quality=75)
            sink.write({"__key__": f"{index:06d}", "jpg": buffer.getvalue(), "cls": b"0"})
    return len(files) / (time.perf_counter() - start)


def naive_opus(source: Path, out: Path) -> float:
    import soundfile
    import webdataset as wds

    from lossyds import codecs
    from lossyds.types import SourceSample

    codec = codecs.get("opus", kbps=6)
    files = sorted(source.rglob("*.flac"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "naive-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for index, path in enumerate(files):
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
            data = codec.encode(SourceSample(key="k", audio=audio.T.copy(), sample_rate=rate))
            sink.write({"__key__": f"{index:06d}", "opus": data})
    return len(files) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--copies", type=int, default=40, help="copies of each of the 5 sample utterances")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    work = args.workdir
    photos = make_photo_folder(work / "photos", args.images)
    speech = make_speech_folder(work / f"speech-{args.copies}", args.copies)
    missed = False
    print(
        f"{'build':<10} {'P=' + str(args.workers) + ' /s':>9} {'P=1 /s':>8} {'naive /s':>9} {'P/1':>6} {'P/naive':>8}"
    )
    for label, common, naive in (
        (
            "jpeg q75",
            [
                "--codec",
                "jpeg",
                "--quality",
                "75",
                "--dataset",
                "imagefolder",
                "--root",
                str(photos),
                "--split",
                "train",
                "--limit",
                str(args.images),
            ],
            lambda: naive_jpeg(photos, work / "naive-jpeg"),
        ),
        (
            "opus 6k",
            ["--codec", "opus", "--kbps", "6", "--dataset", "audiofolder", "--root", str(speech), "--split", "train"],
            lambda: naive_opus(speech, work / "naive-opus"),
        ),
    ):
        many, _ = lossyds_rate([*common, "--workers", str(args.workers)], work / "speed-many")
        one, _ = lossyds_rate([*common, "--workers", "1"], work / "speed-one")
        plain = naive()
        print(f"{label:<10} {many:9.1f} {one:8.1f} {plain:9.1f} {many / one:6.2f} {many / plain:8.2f}")
        missed |= many / one < 1.7 or many < plain
    small = args.images // 4
    base = [
        "--codec",
        "jpeg",
        "--quality",
        "75",
        "--dataset",
        "imagefolder",
        "--root",
        str(photos),
        "--split",
        "train",
        "--workers",
        str(args.workers),
    ]
    _, rss_small = lossyds_rate([*base, "--limit", str(small)], work / "rss-small")
    _, rss_large = lossyds_rate([*base, "--limit", str(small * 4)], work / "rss-large")
    print(
        f"peak RSS (largest process): {small} images {rss_small / 1024:.0f} MB, {small * 4} images {rss_large / 1024:.0f} MB, ratio {rss_large / rss_small:.2f}"
    )
    missed |= rss_large / rss_small > 1.2
    print("targets: P/1 >= 1.7, P/naive >= 1.0, RSS 4x/1x <= 1.2:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
