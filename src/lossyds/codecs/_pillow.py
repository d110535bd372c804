"""Shared machinery of the Pillow-encoded image codecs (JPEG, WebP, AVIF, PNG).

Encoding goes through Pillow. Decoding takes torchvision.io's native decoders where
they exist for the format (they skip the PIL image object and its conversions, and release
the GIL), and Pillow otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import PIL
import torch
from PIL import Image

from ..errors import CodecError
from ..types import SourceSample
from ._torchvision_batch import batch_decoder
from .base import ImageCodec, bracket_candidates

FAST_DECODE_STRIKES = 8


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


def torchvision_mode(function_name: str, channels: int) -> Any:
    """The torchvision ImageReadMode to decode `channels` (1 or 3) with `function_name`
    (libwebp has no gray output: WebP is decoded as RGB and converted)."""
    from torchvision.io import ImageReadMode

    return ImageReadMode.RGB if channels != 1 or function_name == "decode_webp" else ImageReadMode.GRAY


def torchvision_decoder(function_name: str) -> Callable[[bytes, int], torch.Tensor] | None:
    """A torchvision.io decoder `(bytes, channels) -> uint8 [C, H, W]`, or None when this torchvision lacks it."""
    try:
        import torchvision.io as tvio

        decode = getattr(tvio, function_name)
        modes = {channels: torchvision_mode(function_name, channels) for channels in (1, 3)}
    except (ImportError, AttributeError):
        return None

    def run(data: bytes, channels: int) -> torch.Tensor:
        image = decode(encoded_tensor(data), mode=modes[1 if channels == 1 else 3])
        return rgb_to_gray(image) if channels == 1 and image.shape[0] == 3 else image

    return run


def encoded_tensor(data: bytes) -> torch.Tensor:
    """Bitstream bytes -> uint8 [N] tensor (a bytearray copy: torch.frombuffer needs a
    writable buffer; the copy is small next to decoding)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [1, H, W] with Pillow's integer ITU-R 601-2 luma (same as convert("L"))."""
    r, g, b = image.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


class PillowImageCodec(ImageCodec):
    library: ClassVar[str] = "Pillow"
    decodes_in_threads: ClassVar[bool] = True  # torchvision's and Pillow's decoders release the GIL
    pil_format: ClassVar[str]
    torchvision_function: ClassVar[str | None] = None  # e.g. "decode_jpeg"
    _fast_decode: Callable[[bytes, int], torch.Tensor] | None = None
    # Options about chroma, left out for a grayscale image (so it is saved as Pillow saves
    # gray by default: JPEG's one component at 1x1 sampling).
    chroma_options: ClassVar[tuple[str, ...]] = ()
    _fast_decode_checked: bool = False
    _fast_decode_strikes: int = 0  # torchvision failures in a row on bitstreams Pillow could decode

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
        options = self.save_options(quality)
        if sample.image.shape[2] == 1:
            for name in self.chroma_options:
                options.pop(name, None)
        buffer = io.BytesIO()
        pil_image_from_array(sample.image).save(buffer, self.pil_format, **options)
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

    def _torchvision_ready(self) -> bool:
        cls = type(self)
        if not cls._fast_decode_checked:
            cls._fast_decode = torchvision_decoder(cls.torchvision_function) if cls.torchvision_function else None
            cls._fast_decode_checked = True
        return cls._fast_decode is not None

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        channels = int(meta.get("channels", 3))
        cls = type(self)
        fast_failed = False
        if self._torchvision_ready():
            try:
                image = cls._fast_decode(data, channels)  # type: ignore[misc]
                if cls._fast_decode_strikes:
                    cls._fast_decode_strikes = 0
                return image
            except RuntimeError:
                fast_failed = True  # a corrupt bitstream, or a format this torchvision build lacks
        try:
            image = decode_with_pillow(data, channels)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CodecError(f"{self.name}: cannot decode bitstream: {exc}") from exc
        if fast_failed:
            # Pillow decoded what torchvision refused: after FAST_DECODE_STRIKES of those in a row,
            # this torchvision build lacks the format, and Pillow decodes from then on.
            cls._fast_decode_strikes += 1
            if cls._fast_decode_strikes >= FAST_DECODE_STRIKES:
                cls._fast_decode = None
        return image

    def decode_many(self, items: list[tuple[bytes, dict[str, Any]]]) -> list[torch.Tensor | Exception]:
        """torchvision's decoder on the whole list in one TorchScript call (see
        _torchvision_batch); one by one through `decode` when that is unavailable or
        any bitstream of the list fails (each then fails alone, with its own error)."""
        function_name = type(self).torchvision_function
        batch = batch_decoder(function_name) if function_name and len(items) > 1 and self._torchvision_ready() else None
        if batch is None:
            return super().decode_many(items)
        channels = [int(meta.get("channels", 3)) for _, meta in items]
        mode_values = {c: torchvision_mode(function_name, c).value for c in set(channels)}
        try:
            images = batch([encoded_tensor(data) for data, _ in items], [mode_values[c] for c in channels])
        except RuntimeError:
            return super().decode_many(items)
        type(self)._fast_decode_strikes = 0
        return [rgb_to_gray(image) if c == 1 and image.shape[0] == 3 else image for image, c in zip(images, channels)]
