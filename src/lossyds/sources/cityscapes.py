"""Cityscapes: `leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` with
`gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png` (and `_instanceIds.png`).

The photo is compressed; the label maps are stored as the original PNG files (lossless,
pixel-identical) as `KEY.mask.png` and `KEY.instances.png`. `train_ids(mask)` maps label
ids to the 19 train ids (255 = ignore) with cityscapesscripts' label definitions.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError
from .base import Source, SourceRef

SUFFIX = "_leftImg8bit.png"


class CityscapesSource(Source):
    name = "cityscapes"
    splits = ("train", "val", "test")
    modalities = ("image",)
    license = "other"  # Cityscapes terms: non-commercial research

    def tasks(self) -> list[str]:
        return ["image-segmentation"]

    def refs(self) -> list[SourceRef]:
        images = self.root / "leftImg8bit" / self.split
        if not images.is_dir():
            raise UsageError(f"{images} is not a folder (Cityscapes expects ROOT/leftImg8bit/{self.split}/<city>/).")
        records = []
        for path in sorted(images.glob(f"*/*{SUFFIX}")):
            stem = path.name[: -len(SUFFIX)]
            city = path.parent.name
            extra = []
            for attachment, suffix in (
                ("mask.png", "_gtFine_labelIds.png"),
                ("instances.png", "_gtFine_instanceIds.png"),
            ):
                label = self.root / "gtFine" / self.split / city / f"{stem}{suffix}"
                if label.is_file():
                    extra.append((attachment, str(label.relative_to(self.root))))
            records.append(SourceRef(stem, str(path.relative_to(self.root)), {"city": city}, tuple(extra)))
        return records


_LUT: torch.Tensor | None = None


def train_ids(mask: torch.Tensor) -> torch.Tensor:
    """Label-id mask (uint8, any shape) -> train-id mask (uint8; 0..18, 255 = ignore)."""
    global _LUT
    if _LUT is None:
        try:
            from cityscapesscripts.helpers.labels import labels
        except ImportError as exc:
            raise UsageError("train ids need cityscapesscripts: pip install cityscapesscripts") from exc
        lut = torch.full((256,), 255, dtype=torch.uint8)
        for label in labels:
            if 0 <= label.id < 256:
                lut[label.id] = 255 if label.trainId in (-1, 255) else label.trainId
        _LUT = lut
    return _LUT[mask.long()]


def add_train_ids(sample: dict[str, Any]) -> dict[str, Any]:
    """Loader transform: adds `train_ids` beside `mask`."""
    if "mask" in sample:
        sample["train_ids"] = train_ids(sample["mask"])
    return sample
