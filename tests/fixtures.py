"""Fixture datasets made in code from the real sample data."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from lossyds.builders.sample import PHOTOS, SAMPLE_ROOT, skimage_data_dir


def make_image_folder(root: Path, copies: int = 4, split: str = "train") -> Path:
    """ROOT/SPLIT/CLASS/*.png: the sample photos, each in `copies` different crops."""
    for index, (name, label) in enumerate(PHOTOS):
        with Image.open(skimage_data_dir() / name) as img:
            img.load()
            for copy in range(copies):
                width, height = img.size
                box = (copy * 7, copy * 5, width - copy * 3, height - copy * 11)
                target = root / split / label / f"{Path(name).stem}-{copy}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                img.crop(box).save(target)
    return root


def make_audio_folder(root: Path, split: str = "train") -> Path:
    """ROOT/SPLIT/*.flac with metadata.jsonl: the sample speech clips and transcripts."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (SAMPLE_ROOT / "speech" / "transcripts.txt").read_text().splitlines():
        key, _, text = line.partition(" ")
        shutil.copy(SAMPLE_ROOT / "speech" / f"{key}.flac", folder / f"{key}.flac")
        lines.append(f'{{"file_name": "{key}.flac", "text": "{text}"}}')
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def corrupt_jpeg_bytes() -> bytes:
    """A real JPEG cut in half: the header parses, the data does not."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 3]
