"""WebP (libwebp through Pillow, lossy); decoded with torchvision.io.decode_webp."""

from __future__ import annotations

from typing import Any

from ..options import Option
from ._pillow import PillowImageCodec


class WebpCodec(PillowImageCodec):
    name = "webp"
    extension = "webp"
    pil_format = "WEBP"
    torchvision_function = "decode_webp"
    options = (Option("method", int, "WebP encoder effort, 0 (fast) .. 6 (best).", default=4, span=(0, 6)),)

    def save_options(self, quality: int | None) -> dict[str, Any]:
        return {**super().save_options(quality), "lossless": False, "exact": False}
