"""Source base class and the shared file readers with their documented conversion rules.

Image rule: 1-channel sources (L, 1, I;16, I, F) become uint8 grayscale [H, W, 1]
(16-bit and 32-bit values scaled to 0..255 by their full range); everything else
(RGB, CMYK, YCbCr, P, RGBA, LA, ...) becomes uint8 RGB [H, W, 3]; alpha is dropped.
Audio rule: samples become float32 [channels, frames] in [-1, 1] at the file's own
rate; NaN or infinite samples make the file unreadable (skipped, never patched).
"""

from __future__ import annotations

import abc
import hashlib
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile
from PIL import Image, UnidentifiedImageError

from ..errors import SourceError, UsageError, reason_text
from ..options import Option, check_options
from ..types import SourceSample

_KEY_UNSAFE = re.compile(r"[^\w\-]")  # \w: Unicode letters and digits, and '_'


def safe_key(text: str) -> str:
    """A shard key from a name: WebDataset splits member names at the first dot, so dots,
    slashes, spaces and other punctuation become '-'. Letters and digits of any script stay
    (tar and WebDataset keys are UTF-8), NFC-normalised so a name gives one key on every
    file system (macOS stores names decomposed)."""
    return _KEY_UNSAFE.sub("-", unicodedata.normalize("NFC", text))


@dataclass(frozen=True)
class SourceRef:
    """A cheap, picklable pointer to one source sample: what to read and its targets."""

    key: str
    path: str  # main source file, relative to the source's root
    targets: dict[str, Any] = field(default_factory=dict, hash=False)
    extra_paths: tuple[tuple[str, str], ...] = ()  # (attachment name, relative path) stored losslessly
    start: int = 0  # first audio frame of a chunk
    stop: int | None = None  # end audio frame of a chunk (None: to the end)
    problem: str | None = None  # why the sample cannot be used, found while listing (recorded as skipped)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path.name}: {exc.strerror or exc}") from exc


DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own error threshold (2 x MAX_IMAGE_PIXELS)


def max_pixels() -> int:
    """Decompression-bomb guard: images above this many pixels are skipped (env LOSSYDS_MAX_PIXELS)."""
    import os

    return int(os.environ.get("LOSSYDS_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Source image bytes -> uint8 [H, W, 1|3] under the module's conversion rule."""
    limit = max_pixels()
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # lossyds's own guard below replaces Pillow's, so its limit is the one in force
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limit:  # checked from the header, before any pixel is decoded
                raise SourceError(
                    f"image {name} is {width}x{height} = {width * height} pixels, over the limit of {limit} (raise it with LOSSYDS_MAX_PIXELS)"
                )
            img.load()
            mode = img.mode
            if mode in ("L", "1"):
                array = np.asarray(img.convert("L"))
            elif mode.startswith("I") or mode == "F":
                wide = np.asarray(img).astype(np.float64)
                top = 65535.0 if mode.startswith("I;16") or wide.max() > 255 else 255.0
                array = np.clip(np.round(wide / top * 255.0), 0, 255).astype(np.uint8)
            else:
                array = np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        raise SourceError(f"cannot decode image {name}: not in an image format Pillow reads") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise SourceError(f"cannot decode image {name}: {reason_text(exc)}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    if array.ndim == 2:
        array = array[:, :, None]
    if array.size == 0:
        raise SourceError(f"image {name} has no pixels")
    return np.ascontiguousarray(array)


SUBTYPE_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}


def libsndfile_reason(exc: Exception) -> str:
    """libsndfile's own words for a failure: its str() names the file object it was given
    (`Error opening <_io.BytesIO object at 0x...>: ...`) and starts with 'Error : '."""
    reason = getattr(exc, "error_string", None) or reason_text(exc)
    return reason.removeprefix("Error : ").strip().rstrip(".")


def decode_audio(data: bytes, name: str) -> tuple[np.ndarray, int, int | None]:
    """Source audio bytes -> (float32 [C, T], sample rate, source bit depth or None)."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            rate, subtype = handle.samplerate, handle.subtype
            audio = handle.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise SourceError(f"cannot decode audio {name}: {libsndfile_reason(exc)}") from exc
    if audio.shape[0] == 0:
        raise SourceError(f"audio {name} has no samples")
    if not np.isfinite(audio).all():
        raise SourceError(f"audio {name} holds NaN or infinite samples")
    return np.ascontiguousarray(audio.T), int(rate), SUBTYPE_BITS.get(subtype)


class Source(abc.ABC):
    """Reads one dataset layout. `refs()` lists samples cheaply, `load()` reads one."""

    name: ClassVar[str]
    splits: ClassVar[Sequence[str]]
    modalities: ClassVar[Sequence[str]] = ("image", "audio")
    license: ClassVar[str | None] = None  # Hugging Face license id of the source data, None if unknown
    options: ClassVar[tuple[Option, ...]] = ()  # the dataset's own options (CLI flags, spec keys)

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        return cls.options

    def __init__(self, *, root: str | Path | None, split: str | None, modality: str, **options: Any):
        given = check_options(f"dataset {self.name!r}", self.declared_options(), options)
        self.options = self.configure({option.name: given.get(option.name, option.default) for option in self.options})
        if modality not in self.modalities:
            raise UsageError(
                f"dataset {self.name!r} holds {' and '.join(self.modalities)} data; a {modality} codec cannot encode it."
            )
        self.modality = modality
        self.root = self.resolve_root(root)
        self.split = split if split is not None else self.default_split(modality)
        if self.splits and self.split not in self.splits:
            raise UsageError(
                f"dataset {self.name!r} has no split {self.split!r}; choose one of: {', '.join(self.splits)}."
            )

    def configure(self, options: dict[str, Any]) -> dict[str, Any]:
        """Apply the dataset's own options (every declared one, given or at its default);
        returns what goes to the manifest."""
        return options

    def resolve_root(self, root: str | Path | None) -> Path:
        if root is None:
            raise UsageError(f"dataset {self.name!r} needs --root, the folder that holds it.")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise UsageError(f"--root {root} is not a folder.")
        return path.resolve()

    def default_split(self, modality: str) -> str | None:
        return self.splits[0] if self.splits else None

    @abc.abstractmethod
    def refs(self) -> list[SourceRef]:
        """Every sample of the split, in a stable order (sorted), without reading the data."""

    def load(self, record: SourceRef) -> SourceSample:
        """Read and decode one record's files into a SourceSample (raises SourceError when unreadable)."""
        data = read_bytes(self.root / record.path)
        digest = hashlib.sha256(data)
        sample = SourceSample(key=record.key, targets=dict(record.targets), source_path=record.path)
        if self.modality == "image":
            sample.image = decode_image(data, record.path)
        else:
            sample.audio, sample.sample_rate, sample.audio_bit_depth = decode_audio(data, record.path)
        total = len(data)
        for attachment, relative in record.extra_paths:
            extra = read_bytes(self.root / relative)
            digest.update(extra)
            sample.attachments[attachment] = extra
            total += len(extra)
        sample.source_bytes = total
        sample.source_sha256 = digest.hexdigest()
        return sample

    def tasks(self) -> list[str]:
        """Hugging Face task categories the targets serve (e.g. image-classification)."""
        return []
