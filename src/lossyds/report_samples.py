"""The samples an HTML report shows: chosen by key, decoded through the loader's decoder, and
written beside the page as small files a browser opens (PNG images, FLAC audio, spectrograms).

Only the shown samples are decoded. Shards are opened in manifest order (their tar headers
indexed, nothing else read) until every wanted key is found, so a report's time grows with
the number of samples shown, not with the size of the builds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ShardError, UsageError
from .location import join_location

DEFAULT_SAMPLES = 3  # samples shown when --samples names none
OVERVIEW_WIDTH = 384  # px: every build's whole image is scaled to this width...
OVERVIEW_MAX_HEIGHT = 768  # px: ...or down to this height, for images taller than twice their width
CROP_SIZE = 160  # px: the 1:1 crop, the same region from every build
MAX_AUDIO_SECONDS = 10.0  # each player holds at most the first 10 s of a sample (the page's size limit)
SPECTROGRAM_COLUMNS = 480  # time columns of a spectrogram image
SPECTROGRAM_FLOOR_DB = -100.0  # the shared colour scale: dB re full scale, floor to 0 dBFS
SPECTROGRAM_CMAP = "magma"


@dataclass
class DecodedSample:
    """One build's decoded sample: its stored metadata (payload_bits, metrics, size) and the
    decoded signal: uint8 [C, H, W] pixels, or float32 [C, N] audio at meta['sample_rate']."""

    key: str
    meta: dict[str, Any]
    signal: np.ndarray

    def rate(self, modality: str) -> float:
        """This sample's own rate: bits per pixel (images) or kbps (audio), payload bits."""
        bits = self.meta["payload_bits"]
        if modality == "image":
            return bits / (self.meta["height"] * self.meta["width"])
        return bits / (self.meta["num_frames"] / self.meta["sample_rate"]) / 1000


def first_keys(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    """The keys of a build's first shard, in shard order (its tar headers only)."""
    from .shards.mapped import MappedShard

    name = manifest["shards"][0]["path"]
    with MappedShard(join_location(directory, name), name) as shard:
        return [entry.key for entry in shard.entries]


def pick_keys(builds: list[tuple[str | Path, dict[str, Any]]], wanted: list[str] | None) -> list[str]:
    """`wanted` as given, else DEFAULT_SAMPLES keys spread evenly over the keys that every
    build's first shard holds (builds of one source keep its order)."""
    if wanted:
        return list(dict.fromkeys(wanted))
    common: list[str] | None = None
    for directory, manifest in builds:
        keys = first_keys(directory, manifest)
        common = keys if common is None else [k for k in common if k in set(keys)]
    if not common:
        raise UsageError("the builds share no sample key in their first shards; name the samples with --samples.")
    count = min(DEFAULT_SAMPLES, len(common))
    return [common[round(i * (len(common) - 1) / max(count - 1, 1))] for i in range(count)]


def read_samples(directory: str | Path, manifest: dict[str, Any], keys: list[str]) -> dict[str, DecodedSample]:
    """key -> decoded sample, for `keys` of one build, through the loader's decoder (the same
    record checks and codec). Stops opening shards once every key is found; a key the build
    lacks is a UsageError naming it."""
    from . import codecs
    from .load.decode import Decoder
    from .shards.mapped import MappedShard

    codec = codecs.from_manifest(manifest["codec"])
    decoder = Decoder(codec, manifest["modality"], None, None)
    found: dict[str, DecodedSample] = {}
    for shard_info in manifest["shards"]:
        name = shard_info["path"]
        with MappedShard(join_location(directory, name), name) as shard:
            for entry in shard.entries:
                if entry.key not in keys or entry.key in found:
                    continue
                (result,) = decoder.decode([(shard, entry)])
                if isinstance(result, ShardError):
                    raise result
                signal = result["image" if manifest["modality"] == "image" else "audio"]
                meta = {k: v for k, v in result.items() if k not in ("image", "audio")}
                meta.update(_stored_meta(shard, entry, codec.extension))
                found[entry.key] = DecodedSample(entry.key, meta, np.ascontiguousarray(signal.numpy()))
        if len(found) == len(keys):
            break
    missing = [k for k in keys if k not in found]
    if missing:
        raise UsageError(f"build {directory} has no sample {missing[0]!r}; choose keys every build holds.")
    return found


def _stored_meta(shard: Any, entry: Any, extension: str) -> dict[str, Any]:
    from . import record

    return record.read(shard, entry, extension).meta


def file_stem(text: str) -> str:
    """A file name part from a key or build name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def crop_box(pixels: np.ndarray, size: int = CROP_SIZE) -> tuple[int, int, int]:
    """(top, left, side) of the size x size tile with the most detail (mean absolute
    neighbour difference) of uint8 [C, H, W] pixels, where artefacts show first."""
    grey = pixels.astype(np.float32).mean(axis=0)
    height, width = grey.shape
    side = min(size, height, width)
    detail = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    best, box = -1.0, (0, 0)
    for top in range(0, height - side + 1, max(side // 2, 1)):
        for left in range(0, width - side + 1, max(side // 2, 1)):
            score = float(detail[top : top + side - 1, left : left + side - 1].mean())
            if score > best:
                best, box = score, (top, left)
    return box[0], box[1], side


def write_image_views(pixels: np.ndarray, box: tuple[int, int, int], folder: Path, stem: str) -> tuple[str, str]:
    """The whole image scaled to OVERVIEW_WIDTH (or OVERVIEW_MAX_HEIGHT) and the 1:1 crop `box`, as PNG files (lossless,
    so the page adds no artefact of its own); their names relative to `folder`'s parent."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    array = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels[:3], 0, -1)
    image = Image.fromarray(np.ascontiguousarray(array))
    scale = min(OVERVIEW_WIDTH / image.width, OVERVIEW_MAX_HEIGHT / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    overview = image.resize(size, Image.Resampling.LANCZOS)
    top, left, side = box
    crop = image.crop((left, top, left + side, top + side))
    overview.save(folder / f"{stem}.png", optimize=True)
    crop.save(folder / f"{stem}-crop.png", optimize=True)
    return f"{folder.name}/{stem}.png", f"{folder.name}/{stem}-crop.png"


def write_audio_views(
    audio: np.ndarray, sample_rate: int, top_hz: float, folder: Path, stem: str
) -> tuple[str, str, float]:
    """The first MAX_AUDIO_SECONDS of float [C, N] audio as 16-bit FLAC, and its spectrogram
    (0 to `top_hz`, the shared dBFS colour scale) as PNG; their names relative to `folder`'s
    parent and the seconds the FLAC holds."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    frames = min(audio.shape[1], int(MAX_AUDIO_SECONDS * sample_rate))
    clip = np.clip(audio[:, :frames], -1.0, 1.0)
    soundfile.write(folder / f"{stem}.flac", clip.T, sample_rate, format="FLAC", subtype="PCM_16")
    _write_spectrogram(clip.mean(axis=0), sample_rate, top_hz, folder / f"{stem}-spectrogram.png")
    return f"{folder.name}/{stem}.flac", f"{folder.name}/{stem}-spectrogram.png", frames / sample_rate


def _write_spectrogram(mono: np.ndarray, sample_rate: int, top_hz: float, png: Path) -> None:
    """Magnitude in dB re full scale (a full-scale sine reads 0 dB), SPECTROGRAM_FLOOR_DB..0 on
    SPECTROGRAM_CMAP for every build, so colours compare across builds and samples."""
    plt = _pyplot()

    window_length = 512 if sample_rate >= 22050 else 256
    hop = max(window_length // 4, math.ceil(len(mono) / SPECTROGRAM_COLUMNS))
    padded = np.pad(mono, (0, max(0, window_length - len(mono))))
    starts = range(0, len(padded) - window_length + 1, hop)
    window = np.hanning(window_length)
    frames = np.stack([padded[s : s + window_length] * window for s in starts])
    magnitude = np.abs(np.fft.rfft(frames, axis=1)) / (window.sum() / 2)
    bins = int(np.searchsorted(np.fft.rfftfreq(window_length, 1 / sample_rate), top_hz, side="right"))
    decibels = 20 * np.log10(np.maximum(magnitude[:, :bins].T, 1e-10))
    plt.imsave(png, decibels, cmap=SPECTROGRAM_CMAP, vmin=SPECTROGRAM_FLOOR_DB, vmax=0.0, origin="lower")


def _pyplot() -> Any:
    """matplotlib.pyplot off screen, or a UsageError saying which extra brings it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("spectrograms need matplotlib; pip install 'lossyds[eval]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_colour_scale(png: Path) -> str:
    """The spectrograms' colour bar (SPECTROGRAM_FLOOR_DB at the left, 0 dBFS at the right)."""
    plt = _pyplot()

    png.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.tile(np.linspace(SPECTROGRAM_FLOOR_DB, 0.0, 256), (12, 1))
    plt.imsave(png, ramp, cmap=SPECTROGRAM_CMAP, vmin=SPECTROGRAM_FLOOR_DB, vmax=0.0)
    return f"{png.parent.name}/{png.name}"
