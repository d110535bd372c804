"""AVIF (libavif through Pillow); decoded with Pillow.

Encoded with one thread so the bitstream is the same on every machine.
"""
from __future__ import annotations

from typing import Any

from ._pillow import PillowImageCodec


class AvifCodec(PillowImageCodec):
    name = "avif"
    extension = "avif"
    pil_format = "AVIF"

    def __init__(self, *, quality: int | None = None, speed: int = 6, subsampling: str = "4:2:0", **rate: Any):
        # speed: encoder effort 0 (slowest, best) .. 10 (fastest).
        super().__init__(quality=quality, speed=speed, subsampling=subsampling, **rate)

    def save_options(self, quality: int | None) -> dict[str, Any]:
        return {**super().save_options(quality), "max_threads": 1}
