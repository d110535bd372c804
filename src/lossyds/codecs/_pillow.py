"""Shared machinery of the Pillow-encoded image codecs (JPEG, WebP, AVIF, PNG).

Encoding goes through Pillow. Decoding takes torchvision.io's native decoders where
they exist for the format (they skip the PIL image object and its conversions, and release
the GIL), and Pillow otherwise.
"""

from __future__ import annotations

import ctypes
import io
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import CodecError, reason_text
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


class _CStderr:
    """C's `stderr` stream, pointed at a file while native decoders run (see decoder_messages).

    libjpeg's warnings and libpng's errors are printed by the libraries with fprintf(stderr),
    bypassing Python. Pointing file descriptor 2 elsewhere would also take Python's own output
    from every other thread; swapping the C stream pointer takes only C-level printing."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0  # decodes running now
        self.entries = 0  # decodes started so far
        self.ready = False
        self.pointer: Any = None  # libc's `stderr` variable, or None where it cannot be reached
        self.original: int | None = None
        self.capture: Any = None  # the file it points to while decoders run
        self.stream: int | None = None  # that file as a C stream

    def usable(self) -> bool:
        """Set up on first use; False where the C library has no reachable `stderr` (not glibc)."""
        if not self.ready:
            self.ready = True
            try:
                libc = ctypes.CDLL(None)
                pointer = ctypes.c_void_p.in_dll(libc, "stderr")
                libc.fdopen.restype = ctypes.c_void_p
                libc.fdopen.argtypes = (ctypes.c_int, ctypes.c_char_p)
                libc.setvbuf.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t)
                capture = tempfile.TemporaryFile(prefix="lossyds-decoder-")
                stream = libc.fdopen(os.dup(capture.fileno()), b"a")  # appending: several threads may write
                if not stream:
                    return False
                libc.setvbuf(stream, None, 2, 0)  # unbuffered (_IONBF): each message is in the file at once
            except (OSError, ValueError, AttributeError, TypeError):
                return False
            self.pointer, self.original, self.capture, self.stream = pointer, pointer.value, capture, stream
        return self.pointer is not None

    def after_fork(self) -> None:
        """A forked child gets C's own stderr back, and sets up its own file on first use (two
        processes sharing one would read and truncate each other's messages)."""
        if self.active:
            self.pointer.value = self.original
        self.__init__()


_C_STDERR = _CStderr()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_C_STDERR.after_fork)


class _DecoderMessages:
    """The context manager decoder_messages returns."""

    __slots__ = ("lines", "started", "alone")

    def __enter__(self) -> list[str]:
        state, self.lines = _C_STDERR, []
        with state.lock:
            if not state.usable():
                self.started = 0
                return self.lines
            if state.active == 0:
                state.pointer.value = state.stream
            state.active += 1
            state.entries += 1
            self.started, self.alone = state.entries, state.active == 1
        return self.lines

    def __exit__(self, *exc_info: object) -> None:
        if not self.started:
            return
        state = _C_STDERR
        with state.lock:
            state.active -= 1
            if state.active:
                return
            state.pointer.value = state.original
            handle = state.capture.fileno()
            size = os.fstat(handle).st_size
            if not size:
                return
            if self.alone and state.entries == self.started:  # the file was empty when this decode began
                text = os.pread(handle, size, 0).decode("utf-8", "replace")
                self.lines += [line.strip() for line in text.splitlines() if line.strip()]
            os.ftruncate(handle, 0)


def decoder_messages() -> _DecoderMessages:
    """Keep what native decoders print to C's stderr while the block runs (libjpeg's warnings,
    libpng's errors) from the terminal. The list the block gets is filled on exit with those
    lines; it stays empty when another decode ran at the same time, as their lines cannot be
    told apart (each decode's exception still gives its own reason)."""
    return _DecoderMessages()


def decode_failure(codec: str, data: bytes, printed: list[str], fast: Exception | None, pillow: Exception) -> str:
    """One sentence for a bitstream that neither decoder takes: what the native decoder printed,
    torchvision's reason, and Pillow's where torchvision did not try."""
    reasons = list(printed)
    if fast is not None:
        reasons.append(str(fast))
    elif isinstance(pillow, UnidentifiedImageError):
        reasons.append(f"not in an image format Pillow reads (it starts with {data[:4].hex(' ')})")
    else:
        reasons.append(reason_text(pillow))
    unique = dict.fromkeys(reason.strip().rstrip(".!").strip() for reason in reasons)
    return f"{codec} decoder: {'; '.join(reason for reason in unique if reason)}"


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
        fast_error = pillow_error = None
        with decoder_messages() as printed:
            if self._torchvision_ready():
                try:
                    image = cls._fast_decode(data, channels)  # type: ignore[misc]
                    if cls._fast_decode_strikes:
                        cls._fast_decode_strikes = 0
                    return image
                except RuntimeError as exc:
                    fast_error = exc  # a corrupt bitstream, or a format this torchvision build lacks
            try:
                image = decode_with_pillow(data, channels)
            except (OSError, ValueError, RuntimeError, SyntaxError, Image.DecompressionBombError) as exc:
                pillow_error = exc
        if pillow_error is not None:
            raise CodecError(decode_failure(self.name, data, printed, fast_error, pillow_error)) from pillow_error
        if fast_error is not None:
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
            with decoder_messages():  # a bitstream that fails is decoded again alone, which names its reason
                images = batch([encoded_tensor(data) for data, _ in items], [mode_values[c] for c in channels])
        except RuntimeError:
            return super().decode_many(items)
        type(self)._fast_decode_strikes = 0
        return [rgb_to_gray(image) if c == 1 and image.shape[0] == 3 else image for image, c in zip(images, channels)]
