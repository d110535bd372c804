"""JPEG (libjpeg-turbo through Pillow); decoded with torchvision.io.decode_jpeg."""

from __future__ import annotations

from ..options import Option
from ._pillow import PillowImageCodec


class JpegCodec(PillowImageCodec):
    name = "jpeg"
    extension = "jpg"
    pil_format = "JPEG"
    torchvision_function = "decode_jpeg"
    quality_range = (1, 100)
    chroma_options = ("subsampling",)
    options = (
        Option(
            "optimize",
            bool,
            "JPEG: optimal Huffman tables (smaller files, same pixels; baseline, not progressive).",
            default=True,
        ),
        Option(
            "subsampling", str, "JPEG/AVIF chroma subsampling.", default="4:2:0", choices=("4:4:4", "4:2:2", "4:2:0")
        ),
    )
