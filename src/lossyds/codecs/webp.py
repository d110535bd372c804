"""WebP (libwebp through Pillow, lossy); decoded with torchvision.io.decode_webp."""
from __future__ import annotations

from typing import Any

from ._pillow import PillowImageCodec


class WebpCodec(PillowImageCodec):
    name = "webp"
    extension = "webp"
    pil_format = "WEBP"
    torchvision_function = "decode_webp"

    def __init__(self, *, quality: int | None = None, method: int = 4, **rate: Any):
        # method: libwebp effort 0 (fast) .. 6 (best).
        super().__init__(quality=quality, method=method, **rate)

    def save_options(self, quality: int | None) -> dict[str, Any]:
        return {**super().save_options(quality), "lossless": False, "exact": False}
