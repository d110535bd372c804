"""PNG (lossless reference); decoded with torchvision.io.decode_png."""

from __future__ import annotations

from ..options import Option
from ._pillow import PillowImageCodec


class PngCodec(PillowImageCodec):
    name = "png"
    extension = "png"
    pil_format = "PNG"
    torchvision_function = "decode_png"
    quality_range = None
    lossless = True
    options = (Option("compress_level", int, "PNG zlib level, 0 (none) .. 9 (smallest).", default=6, span=(0, 9)),)
