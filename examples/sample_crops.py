"""Small image-classification data for the examples' CPU runs: crops of lossyds's sample photos.

Each of the six photos is one class; every split takes its crops at its own offsets, so no
crop is in two splits.
"""

from __future__ import annotations

from pathlib import Path


def write_photo_crops(folder: Path, counts: dict[str, tuple[int, int]], side: int = 64) -> Path:
    """FOLDER/SPLIT/cINDEX/N.png: `count` crops of `side` x `side` pixels per photo and split,
    from the photo resized to 256 x 256; `counts`: split -> (count, offset of its crop grid)."""
    from PIL import Image

    from lossyds.sources.sample import PHOTOS, skimage_data_dir

    span = 256 - side
    for index, (name, _) in enumerate(PHOTOS):
        image = Image.open(skimage_data_dir() / name).convert("RGB").resize((256, 256))
        for split, (count, offset) in counts.items():
            target = folder / split / f"c{index}"
            target.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                x, y = ((n * 37 + offset * 11) % span), ((n * 53 + offset * 7) % span)
                image.crop((x, y, x + side, y + side)).save(target / f"{n}.png")
    return folder
