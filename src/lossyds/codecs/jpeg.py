"""JPEG (libjpeg-turbo through Pillow); decoded with torchvision.io.decode_jpeg."""
from __future__ import annotations

from typing import Any

from ._pillow import PillowImageCodec


class JpegCodec(PillowImageCodec):
    name = "jpeg"
    extension = "jpg"
    pil_format = "JPEG"
    torchvision_function = "decode_jpeg"
    quality_range = (1, 100)

    def __init__(self, *, quality: int | None = None, optimize: bool = True, subsampling: str = "4:2:0", **rate: Any):
        # optimize: optimal Huffman tables, a few % smaller at no quality cost; baseline (non-progressive).
        super().__init__(quality=quality, optimize=optimize, subsampling=subsampling, **rate)
