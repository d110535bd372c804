"""MUSDB18 and MUSDB18-HQ.

- MUSDB18-HQ: `ROOT/<split>/<track>/{mixture,drums,bass,other,vocals}.wav`;
- MUSDB18: `ROOT/<split>/<track>.stem.mp4` (Native Instruments stems: stream 0 is the
  mixture, then drums, bass, other, vocals; AAC, decoded with PyAV).
Splits: train, test. The mixture is compressed. The stems are stored beside it as
lossless 16-bit FLAC references (`KEY.stems.drums.flac`, ...) or, with
`--compress-stems`, encoded by the same codec (`KEY.stems.drums.opus`, ...) for
training targets; their bits then count in the sample's payload.
`--chunk-seconds S` cuts tracks into chunks of exactly round(S x rate) frames (the last
one shorter), recording `start_frame` and `num_frames` of each in its metadata.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from ..errors import OptionError, SourceError, UsageError
from ..options import Option
from ..types import SourceSample
from .base import SUBTYPE_BITS, Source, SourceRef, safe_key

STEMS = ("drums", "bass", "other", "vocals")


@functools.lru_cache(maxsize=1)
def decode_stem_mp4(path: str) -> tuple[tuple[np.ndarray, ...], int]:
    """All five streams of a .stem.mp4 as float32 [C, T] arrays (mixture first) and their rate."""
    import av

    try:
        with av.open(path) as container:
            streams = list(container.streams.audio)
            if len(streams) < 5:
                raise SourceError(f"{Path(path).name} holds {len(streams)} audio streams; a MUSDB18 stem file has 5")
            chunks: list[list[np.ndarray]] = [[] for _ in streams]
            rate = streams[0].codec_context.sample_rate
            for packet in container.demux(streams):
                for frame in packet.decode():
                    array = frame.to_ndarray()
                    if not frame.format.is_planar:
                        array = array.reshape(-1, frame.layout.nb_channels).T
                    chunks[packet.stream.index - streams[0].index].append(array.astype(np.float32))
    except av.FFmpegError as exc:
        raise SourceError(f"cannot decode {Path(path).name}: {exc}") from exc
    signals = [np.concatenate(c, axis=1) if c else np.zeros((2, 0), np.float32) for c in chunks[:5]]
    length = min(s.shape[1] for s in signals)
    return tuple(s[:, :length] for s in signals), rate


class MusdbSource(Source):
    name = "musdb"
    splits = ("train", "test")
    modalities = ("audio",)
    license = "other"  # MUSDB18: academic, non-commercial use

    def tasks(self) -> list[str]:
        return ["audio-to-audio"]

    options = (
        Option("chunk_seconds", float, "MUSDB: cut tracks into chunks of this many seconds."),
        Option(
            "compress_stems",
            bool,
            "MUSDB: encode the stems with the codec too (default: lossless FLAC references).",
            default=False,
        ),
    )

    def configure(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["chunk_seconds"] is not None and not options["chunk_seconds"] > 0:
            raise OptionError(f"{{0}} must be positive (got {options['chunk_seconds']}).", "chunk_seconds")
        self.chunk_seconds = options["chunk_seconds"]
        self.compress_stems = options["compress_stems"]
        return options

    def _tracks(self) -> list[tuple[str, Path]]:
        folder = self.root / self.split
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder (MUSDB expects ROOT/{self.split}/).")
        tracks = []
        for path in sorted(folder.iterdir()):
            if path.is_dir() and (path / "mixture.wav").is_file():
                tracks.append((path.name, path))
            elif path.name.endswith(".stem.mp4"):
                tracks.append((path.name[: -len(".stem.mp4")], path))
        return tracks

    def _length(self, path: Path) -> tuple[int, int]:
        """(frames, rate) of a track without decoding it (stem.mp4: from the container, exact after decoding)."""
        if path.is_dir():
            info = soundfile.info(str(path / "mixture.wav"))
            return info.frames, info.samplerate
        signals, rate = decode_stem_mp4(str(path))
        return signals[0].shape[1], rate

    def refs(self) -> list[SourceRef]:
        records = []
        for track, path in self._tracks():
            relative = str(path.relative_to(self.root))
            if self.chunk_seconds is None:
                records.append(SourceRef(safe_key(track), relative, {"track": track, "start_frame": 0}))
                continue
            try:
                frames, rate = self._length(path)
            except (SourceError, RuntimeError, soundfile.LibsndfileError) as exc:
                records.append(SourceRef(safe_key(track), relative, {"track": track, "error": str(exc)}))
                continue
            step = round(self.chunk_seconds * rate)
            for index, start in enumerate(range(0, frames, step)):
                records.append(
                    SourceRef(
                        f"{safe_key(track)}-c{index:04d}",
                        relative,
                        {"track": track, "chunk": index, "start_frame": start},
                        start=start,
                        stop=min(frames, start + step),
                    )
                )
        return records

    def load(self, record: SourceRef) -> SourceSample:
        if "error" in record.targets:
            raise SourceError(record.targets["error"])
        path = self.root / record.path
        if path.is_dir():
            signals, rate, sizes, depth = [], None, 0, 0
            for name in ("mixture", *STEMS):
                file = path / f"{name}.wav"
                try:
                    audio, rate = soundfile.read(
                        str(file), start=record.start, stop=record.stop, dtype="float32", always_2d=True
                    )
                    info = soundfile.info(str(file))
                    total, depth = info.frames, max(depth, SUBTYPE_BITS.get(info.subtype, 32))
                except (soundfile.LibsndfileError, RuntimeError) as exc:
                    raise SourceError(f"cannot read {record.path}/{name}.wav: {exc}") from exc
                signals.append(np.ascontiguousarray(audio.T))
                sizes += round(file.stat().st_size * audio.shape[0] / max(1, total))
        else:
            whole, rate = decode_stem_mp4(str(path))
            depth = None  # decoded AAC: float samples
            signals = [s[:, record.start : record.stop] for s in whole]
            sizes = round(path.stat().st_size * signals[0].shape[1] / max(1, whole[0].shape[1]))
        length = min(s.shape[1] for s in signals)
        if length == 0:
            raise SourceError(f"{record.path} has no audio in frames {record.start}..{record.stop}")
        signals = [s[:, :length] for s in signals]
        for name, signal in zip(("mixture", *STEMS), signals):
            if not np.isfinite(signal).all():
                raise SourceError(f"{record.path} {name} holds NaN or infinite samples")
        digest = hashlib.sha256()
        for signal in signals:
            digest.update(signal.tobytes())
        sample = SourceSample(
            key=record.key,
            audio=signals[0],
            sample_rate=int(rate),
            audio_bit_depth=depth,
            targets=dict(record.targets),
            source_path=record.path,
            source_bytes=sizes,
            source_sha256=digest.hexdigest(),
        )
        for name, signal in zip(STEMS, signals[1:]):
            if self.compress_stems:
                sample.extra_audio[f"stems.{name}"] = signal
            else:
                sample.reference_audio[f"stems.{name}"] = signal
        return sample
