"""Shared machinery of the audio codecs: PyAV encode/decode to bytes, resampling, length fitting.

Audio arrays are float32 [channels, frames]. Resampling uses libsoxr (python-soxr), whose
whole-signal `resample` compensates its filter delay, so output stays sample-aligned.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soxr

from ..errors import CodecError


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 [C, T] at from_rate -> float32 [C, T'] at to_rate (T' ~ T * to_rate / from_rate)."""
    if from_rate == to_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), from_rate, to_rate, quality="HQ")
    if out.ndim == 1:
        out = out[:, None]
    return np.ascontiguousarray(out.T, dtype=np.float32)


def fit_length(audio: np.ndarray, frames: int) -> np.ndarray:
    """Crop or zero-pad [C, T] to exactly `frames` frames."""
    have = audio.shape[1]
    if have == frames:
        return audio
    if have > frames:
        return audio[:, :frames]
    return np.pad(audio, ((0, 0), (0, frames - have)))


def layout_name(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise CodecError(f"{channels}-channel audio is not supported by this codec (mono or stereo only)")


def pyav_encode(
    audio: np.ndarray,
    sample_rate: int,
    *,
    muxer: str,
    encoder: str,
    bit_rate: int,
    encoder_options: dict[str, str] | None = None,
    muxer_options: dict[str, str] | None = None,
) -> bytes:
    """Encode float32 [C, T] audio into a complete in-memory file (e.g. Ogg/Opus, MP3).

    The `bitexact` flags keep library version strings and random stream serials
    out of the file, so the same input gives the same bytes.
    """
    import av  # imported here: EnCodec's resampling needs this module, not FFmpeg

    channels = audio.shape[0]
    layout = layout_name(channels)
    buffer = io.BytesIO()
    options = {"fflags": "+bitexact", **(muxer_options or {})}
    with av.open(buffer, mode="w", format=muxer, container_options=options) as container:
        stream = container.add_stream(
            encoder, rate=sample_rate, options={"flags": "+bitexact", **(encoder_options or {})}
        )
        stream.layout = layout
        stream.bit_rate = bit_rate
        planar = np.ascontiguousarray(audio, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def pyav_decode(data: bytes, demuxer: str) -> tuple[np.ndarray, int]:
    """Decode an in-memory audio file to float32 [C, T] and its decoded sample rate.

    The demuxer's skip/trim information (Opus pre-skip and end trim, the LAME tag's
    encoder delay and padding) is applied by FFmpeg, so T is the encoded length.
    """
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            channels = stream.codec_context.channels
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                if not frame.format.is_planar:
                    array = array.reshape(-1, channels).T
                chunks.append(array.astype(np.float32, copy=False))
                rate = frame.sample_rate
    except av.FFmpegError as exc:  # its str() adds an error number and a '<none>' file name
        raise CodecError(f"FFmpeg ({demuxer}): {exc.strerror}") from exc
    except IndexError as exc:
        raise CodecError(f"FFmpeg ({demuxer}): the bitstream holds no audio stream") from exc
    if not chunks:
        raise CodecError(f"{demuxer} bitstream holds no audio")
    return np.concatenate(chunks, axis=1), rate


def to_source_grid(audio: np.ndarray, decoded_rate: int, meta: dict[str, Any]) -> np.ndarray:
    """Bring decoded audio back to the source rate and exact source length recorded in `meta`."""
    source_rate = int(meta["sample_rate"])
    audio = resample(audio, decoded_rate, source_rate)
    return fit_length(audio, int(meta["num_frames"]))
