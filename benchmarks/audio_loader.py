"""Audio loader throughput per worker: Opus and MP3 speech through the loader vs the codec alone.

Target: >= 300x real time per worker end to end. One process, no DataLoader
workers (per-worker rate). Exit 1 when missed.

    python benchmarks/audio_loader.py --copies 20
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import lossyds
from lossyds import codecs
from lossyds.builder import BuildOptions, build
from lossyds.sources.sample import SAMPLE_ROOT


def make_speech_folder(root: Path, copies: int) -> Path:
    """audiofolder ROOT/train/*.flac + metadata.jsonl: each sample utterance `copies` times,
    every copy shifted in time and gain so no two bitstreams are alike (a compressor must
    not find repeats that real datasets do not have)."""
    import json

    import numpy as np
    import soundfile

    folder = root / "train"
    folder.mkdir(parents=True, exist_ok=True)
    texts = dict(line.split(" ", 1) for line in (SAMPLE_ROOT / "speech" / "transcripts.txt").read_text().splitlines())
    rows = []
    for path in sorted((SAMPLE_ROOT / "speech").glob("*.flac")):
        audio, rate = soundfile.read(path, dtype="float32")
        for copy in range(copies):
            target = folder / f"{path.stem}-{copy:03d}.flac"
            if not target.exists():
                shifted = np.roll(audio, 97 * copy) * (0.6 + 0.4 * ((copy * 7919) % 100) / 100)
                soundfile.write(target, shifted, rate, subtype="PCM_16")
            rows.append(json.dumps({"file_name": target.name, "text": texts[path.stem]}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20, help="copies of each sample utterance (5 utterances, ~20 s)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    source = make_speech_folder(args.workdir / f"speech-{args.copies}", args.copies)
    missed = False
    print(f"{'codec':<12} {'codec alone':>12} {'loader':>10} {'loader/codec':>13}   (x real time, one process)")
    for name, kbps in (("opus", 6), ("mp3", 32)):
        out = args.workdir / f"speech-{args.copies}-{name}"
        if not (out / "manifest.json").exists():
            build(
                BuildOptions(
                    codec=name,
                    out=out,
                    codec_options={"kbps": kbps},
                    dataset="audiofolder",
                    root=source,
                    split="train",
                    force=True,
                )
            )
        import json

        manifest = json.loads((out / "manifest.json").read_text())
        seconds = manifest["bits"]["source_seconds"]
        codec = codecs.from_manifest(manifest["codec"])
        items = []
        for shard in manifest["shards"]:
            with tarfile.open(out / shard["path"]) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar}
            for member, data in members.items():
                if member.endswith("." + codec.extension):
                    items.append((data, json.loads(members[member.rsplit(".", 1)[0] + ".json"])))
        for data, meta in items[:5]:
            codec.decode(data, meta)
        start = time.perf_counter()
        for data, meta in items:
            codec.decode(data, meta)
        alone = seconds / (time.perf_counter() - start)
        dataset = lossyds.open_dataset(out)
        start = time.perf_counter()
        count = sum(1 for _ in dataset)
        through = seconds / (time.perf_counter() - start)
        print(f"{name + ' ' + str(kbps) + 'k':<12} {alone:11.0f}x {through:9.0f}x {through / alone:13.2f}")
        missed |= through < 300 or count != manifest["num_samples"]
    print("target: loader >= 300x real time per worker:", "MISSED" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
