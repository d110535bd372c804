"""AVIF (libavif through Pillow); decoded with Pillow.

Encoded with one thread so the bitstream is the same on every machine.
"""

from __future__ import annotations

from typing import Any

from ..options import Option
from ._pillow import PillowImageCodec


class AvifCodec(PillowImageCodec):
    name = "avif"
    extension = "avif"
    pil_format = "AVIF"
    options = (
        Option("speed", int, "AVIF encoder effort, 0 (slowest, best) .. 10 (fastest).", default=6, span=(0, 10)),
        Option(
            "subsampling", str, "JPEG/AVIF chroma subsampling.", default="4:2:0", choices=("4:4:4", "4:2:2", "4:2:0")
        ),
    )

    def save_options(self, quality: int | None) -> dict[str, Any]:
        return {**super().save_options(quality), "max_threads": 1}
