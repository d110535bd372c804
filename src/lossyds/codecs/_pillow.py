"""Shared machinery of the Pillow-encoded image codecs (JPEG, WebP, AVIF, PNG).

Encoding goes through Pillow. Decoding takes torchvision.io's native decoders where
they exist for the format (2.4x PIL's default path for JPEG, measured in
ENVIRONMENT.md), and Pillow otherwise.
"""
from __future__ import annotations

import io
from typing import Any, Callable, ClassVar

import numpy as np
import PIL
import torch
from PIL import Image

from ..errors import CodecError
from ..types import SourceSample
from .base import ImageCodec, bracket_candidates


def pil_image_from_array(image: np.ndarray) -> Image.Image:
    """uint8 [H, W, 1|3] -> PIL image in mode L or RGB."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise CodecError(f"expected uint8 [H, W, 1|3] image, got {image.dtype} {image.shape}")
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image, "L" if image.shape[2] == 1 else "RGB")


def decode_with_pillow(data: bytes, channels: int) -> torch.Tensor:
    """Any Pillow-readable bitstream -> uint8 [channels, H, W]."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        array = np.array(img)  # a writable copy: torch refuses read-only arrays
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def torchvision_decoder(function_name: str) -> Callable[[bytes, int], torch.Tensor] | None:
    """A torchvision.io decoder `(bytes, channels) -> uint8 [C, H, W]`, or None when this torchvision lacks it."""
    try:
        import torchvision.io as tvio

        decode = getattr(tvio, function_name)
        read_mode = tvio.ImageReadMode
    except (ImportError, AttributeError):
        return None

    gray_mode = read_mode.RGB if function_name == "decode_webp" else read_mode.GRAY  # libwebp has no gray output

    def run(data: bytes, channels: int) -> torch.Tensor:
        # bytearray: torch.frombuffer needs a writable buffer; the copy is small next to decoding.
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = decode(encoded, mode=gray_mode if channels == 1 else read_mode.RGB)
        return rgb_to_gray(image) if channels == 1 and image.shape[0] == 3 else image

    return run


def rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [1, H, W] with Pillow's integer ITU-R 601-2 luma (same as convert("L"))."""
    r, g, b = image.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


class PillowImageCodec(ImageCodec):
    library: ClassVar[str] = "Pillow"
    pil_format: ClassVar[str]
    torchvision_function: ClassVar[str | None] = None  # e.g. "decode_jpeg"
    _fast_decode: Callable[[bytes, int], torch.Tensor] | None = None
    _fast_decode_checked: bool = False

    def save_options(self, quality: int | None) -> dict[str, Any]:
        """Keyword arguments for PIL.Image.save: self.params with the quality to use."""
        options = {k: v for k, v in self.params.items() if k not in ("quality", "bpp")}
        if quality is not None:
            options["quality"] = quality
        return options

    @classmethod
    def library_version(cls) -> str:
        return PIL.__version__

    def encode_at(self, sample: SourceSample, quality: int | None) -> bytes:
        if sample.image is None:
            raise CodecError(f"{self.name} encodes images; sample {sample.key!r} has none")
        buffer = io.BytesIO()
        pil_image_from_array(sample.image).save(buffer, self.pil_format, **self.save_options(quality))
        return buffer.getvalue()

    def encode(self, sample: SourceSample) -> bytes:
        if "bpp" not in self.params:
            return self.encode_at(sample, self.params.get("quality"))
        target = self.params["bpp"] * sample.image.shape[0] * sample.image.shape[1]
        return min(self.candidates(sample), key=lambda c: abs(len(c[1]) * 8 - target))[1]

    def candidates(self, sample: SourceSample) -> list[tuple[dict[str, Any], bytes]]:
        if "bpp" not in self.params:
            return [({}, self.encode(sample))]
        if sample.image is None:
            raise CodecError(f"{self.name} encodes images; sample {sample.key!r} has none")
        target_bits = self.params["bpp"] * sample.image.shape[0] * sample.image.shape[1]
        low, high = self.quality_range
        return bracket_candidates(lambda quality: self.encode_at(sample, quality), low, high, target_bits)

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        channels = int(meta.get("channels", 3))
        cls = type(self)
        if not cls._fast_decode_checked:
            cls._fast_decode = torchvision_decoder(cls.torchvision_function) if cls.torchvision_function else None
            cls._fast_decode_checked = True
        if cls._fast_decode is not None:
            try:
                return cls._fast_decode(data, channels)
            except RuntimeError:
                # torchvision built without this format's library: fall back for good.
                cls._fast_decode = None
        try:
            return decode_with_pillow(data, channels)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CodecError(f"{self.name}: cannot decode bitstream: {exc}") from exc
