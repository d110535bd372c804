"""Helpers shared by the benchmark scripts: ImageNet-sized photo shards made from the sample photos."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from lossyds.builder import BuildOptions, build
from lossyds.sources.sample import PHOTOS, skimage_data_dir


def make_photo_folder(root: Path, count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """imagefolder ROOT/train/CLASS/*.png of `count` ImageNet-sized (500x375) crops of the sample photos."""
    sources = []
    for name, label in PHOTOS:
        with Image.open(skimage_data_dir() / name) as img:
            sources.append((label, img.convert("RGB").resize((640, 480))))
    for index in range(count):
        label, img = sources[index % len(sources)]
        dx, dy = (index * 13) % 140, (index * 7) % 105
        target = root / "train" / label / f"img-{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            img.crop((dx, dy, dx + size[0], dy + size[1])).save(target, compress_level=1)
    return root


def build_photo_shards(root: Path, out: Path, codec: str, quality: int, shard_samples: int) -> dict:
    if (out / "manifest.json").exists():
        import json

        return json.loads((out / "manifest.json").read_text())
    return build(
        BuildOptions(
            codec=codec,
            out=out,
            codec_options={"quality": quality},
            dataset="imagefolder",
            root=root,
            split="train",
            shard_samples=shard_samples,
        )
    )


def rate(function: Callable[[], int], min_seconds: float = 1.0) -> float:
    """Items per second of `function` (which returns how many items it processed), run for at least min_seconds."""
    items, start = 0, time.perf_counter()
    while True:
        items += function()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return items / elapsed


def best_seconds(function: Callable[[], object], repeat: int = 3, warm_up: bool = True) -> float:
    """The best wall time of `repeat` runs of function(), after one untimed run when `warm_up`."""
    if warm_up:
        function()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best
