"""PNG (lossless reference); decoded with torchvision.io.decode_png."""
from __future__ import annotations

from typing import Any

from ._pillow import PillowImageCodec


class PngCodec(PillowImageCodec):
    name = "png"
    extension = "png"
    pil_format = "PNG"
    torchvision_function = "decode_png"
    quality_range = None
    lossless = True

    def __init__(self, *, compress_level: int = 6, **rate: Any):
        super().__init__(compress_level=compress_level, **rate)
