"""Codec registry and the standard codecs, on the real sample data."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from lossyds import codecs
from lossyds.codecs.avif import AvifCodec
from lossyds.codecs.flac import FlacCodec
from lossyds.codecs.jpeg import JpegCodec
from lossyds.codecs.mp3 import Mp3Codec
from lossyds.codecs.opus import OpusCodec
from lossyds.codecs.png import PngCodec
from lossyds.codecs.webp import WebpCodec
from lossyds.errors import CodecError, UsageError
from lossyds.sources import get as get_builder

from .conftest import STANDARD_CODECS

EXPECTED = {
    "jpeg": JpegCodec,
    "webp": WebpCodec,
    "avif": AvifCodec,
    "png": PngCodec,
    "mp3": Mp3Codec,
    "opus": OpusCodec,
    "flac": FlacCodec,
}


def photos():
    builder = get_builder("sample", root=None, split="photos", modality="image")
    return [builder.load(r) for r in builder.refs()]


def speech():
    builder = get_builder("sample", root=None, split="speech", modality="audio")
    return [builder.load(r) for r in builder.refs()]


def test_registry_maps_each_name_to_its_class():
    assert set(EXPECTED) <= set(codecs.available())
    for name, cls in EXPECTED.items():
        codec = codecs.get(name, **STANDARD_CODECS[name])
        assert type(codec) is cls
        assert codec.name == name


@pytest.mark.parametrize(
    "name, rate, fragment",
    [
        ("jpegg", {}, "choose one of: avif, bmshj2018-factorized"),
        ("jpeg", {"quality": 150}, "1..100"),
        ("jpeg", {}, "needs quality"),
        ("jpeg", {"kbps": 6}, "takes no option kbps"),
        ("opus", {"kbps": 2}, "6..256"),
        ("opus", {"quality": 5}, "takes no option quality"),
        ("mp3", {"kbps": 33}, "one of 8, 16"),
        ("png", {"quality": 5}, "lossless"),
    ],
)
def test_bad_names_and_rates_give_one_clear_sentence(name, rate, fragment):
    with pytest.raises(UsageError) as info:
        codecs.get(name, **rate)
    message = str(info.value)
    assert fragment in message
    assert message.count("\n") == 0
    assert "--" not in message  # the library names Python parameters; the CLI shows flags:
    for option in ("quality", "kbps"):
        if f" {option}" in message and name != "jpegg":
            assert f"--{option}" in info.value.cli_message()


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif", "png"])
def test_image_codecs_keep_size_and_mode(name):
    codec = codecs.get(name, **STANDARD_CODECS[name])
    modes_seen = set()
    for sample in photos():
        data = codec.encode(sample)
        assert data == codec.encode(sample), "encoding must be deterministic"
        height, width, channels = sample.image.shape
        decoded = codec.decode(data, {"height": height, "width": width, "channels": channels})
        assert decoded.dtype == torch.uint8
        assert tuple(decoded.shape) == (channels, height, width)
        modes_seen.add(channels)
        # An independent reader opens the bitstream as a standard file of the same size.
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (width, height)
        error = np.abs(decoded.numpy().transpose(1, 2, 0).astype(int) - sample.image.astype(int)).mean()
        if codec.lossless:
            assert error == 0
        else:
            assert 0 < error < 40  # lossy, but still the same picture
    assert modes_seen == {1, 3}, "the sample must hold grayscale and RGB photos"


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif", "png"])
def test_decode_many_gives_decode_pixels_and_keeps_a_bad_bitstream_to_itself(name):
    codec = codecs.get(name, **STANDARD_CODECS[name])
    items = []
    for sample in photos():
        height, width, channels = sample.image.shape
        items.append((codec.encode(sample), {"height": height, "width": width, "channels": channels}))
    assert {meta["channels"] for _, meta in items} == {1, 3}
    one_by_one = [codec.decode(data, meta) for data, meta in items]
    assert all(torch.equal(a, b) for a, b in zip(codec.decode_many(items), one_by_one, strict=True))
    spoiled = items[:2] + [(b"\x00" * 64, items[0][1])] + items[2:]
    results = codec.decode_many(spoiled)
    assert isinstance(results[2], CodecError) and len(results) == len(spoiled)
    assert all(torch.equal(a, b) for a, b in zip(results[:2] + results[3:], one_by_one, strict=True))


def test_torchvision_is_dropped_only_when_it_keeps_refusing_what_pillow_decodes(monkeypatch):
    from lossyds.codecs import _pillow

    codec = codecs.get("jpeg", quality=50)
    sample = photos()[0]
    height, width, channels = sample.image.shape
    data, meta = codec.encode(sample), {"height": height, "width": width, "channels": channels}
    expected = codec.decode(data, meta)

    def refuses(data: bytes, channels: int):
        raise RuntimeError("this torchvision has no libjpeg")

    monkeypatch.setattr(JpegCodec, "_fast_decode_checked", True)
    monkeypatch.setattr(JpegCodec, "_fast_decode", staticmethod(refuses))
    monkeypatch.setattr(JpegCodec, "_fast_decode_strikes", 0)
    for _ in range(_pillow.FAST_DECODE_STRIKES * 2):  # corrupt bitstreams are no strike: Pillow fails too
        with pytest.raises(CodecError):
            codec.decode(b"\x00" * 64, meta)
    assert JpegCodec._fast_decode is not None
    for attempt in range(_pillow.FAST_DECODE_STRIKES):
        assert JpegCodec._fast_decode is not None, attempt
        decoded = codec.decode(data, meta)  # Pillow decodes it; torchvision's failure counts
        assert decoded.shape == expected.shape and (decoded.float() - expected.float()).abs().mean() < 2
    assert JpegCodec._fast_decode is None


def xcorr_lag(decoded: np.ndarray, source: np.ndarray) -> int:
    n = len(source)
    spectrum = np.fft.rfft(decoded, 2 * n) * np.conj(np.fft.rfft(source, 2 * n))
    corr = np.fft.irfft(spectrum)
    lag = int(np.argmax(corr))
    return lag if lag < n else lag - 2 * n


def test_opus_6kbps_on_16khz_speech_returns_source_rate_and_length():
    codec = codecs.get("opus", kbps=6)
    for sample in speech():
        assert sample.sample_rate == 16000
        data = codec.encode(sample)
        meta = {"sample_rate": 16000, "num_frames": sample.audio.shape[1]}
        decoded = codec.decode(data, meta)
        assert decoded.dtype == torch.float32 and tuple(decoded.shape) == sample.audio.shape
        seconds = sample.audio.shape[1] / 16000
        assert 4.0 < len(data) * 8 / seconds / 1000 < 9.0  # achieved rate near 6 kbps (Ogg pages included)
        # At 6 kbps libopus codes narrowband SILK, whose internal resampler leaves a sub-0.2 ms offset.
        assert abs(xcorr_lag(decoded[0].numpy(), sample.audio[0])) <= 3


def test_opus_at_24kbps_is_sample_aligned():
    codec = codecs.get("opus", kbps=24)
    for sample in speech():
        meta = {"sample_rate": 16000, "num_frames": sample.audio.shape[1]}
        decoded = codec.decode(codec.encode(sample), meta)
        assert xcorr_lag(decoded[0].numpy(), sample.audio[0]) == 0


@pytest.mark.parametrize("kbps", [8, 32])
def test_mp3_is_sample_aligned_with_the_source(kbps):
    codec = codecs.get("mp3", kbps=kbps)
    for sample in speech():
        meta = {"sample_rate": sample.sample_rate, "num_frames": sample.audio.shape[1]}
        decoded = codec.decode(codec.encode(sample), meta).numpy()
        assert decoded.shape == sample.audio.shape
        assert xcorr_lag(decoded[0], sample.audio[0]) == 0


def test_mp3_and_opus_at_441khz_stereo_music_come_back_aligned():
    builder = get_builder("sample", root=None, split="music", modality="audio")
    (record,) = builder.refs()
    sample = builder.load(record)
    assert sample.sample_rate == 44100 and sample.audio.shape[0] == 2
    meta = {"sample_rate": 44100, "num_frames": sample.audio.shape[1]}
    for name, kbps in (("mp3", 64), ("opus", 48)):
        codec = codecs.get(name, kbps=kbps)
        decoded = codec.decode(codec.encode(sample), meta).numpy()
        assert decoded.shape == sample.audio.shape
        for channel in range(2):
            assert xcorr_lag(decoded[channel], sample.audio[channel]) == 0, name


def test_flac_is_lossless_and_a_standard_file():
    codec = codecs.get("flac")
    for sample in speech():
        data = codec.encode(sample)
        meta = {"sample_rate": sample.sample_rate, "num_frames": sample.audio.shape[1]}
        assert np.array_equal(codec.decode(data, meta).numpy(), sample.audio)
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert rate == sample.sample_rate and np.array_equal(audio, sample.audio[0])


def test_audio_codecs_are_deterministic():
    sample = speech()[0]
    for name in ("opus", "mp3", "flac"):
        codec = codecs.get(name, **STANDARD_CODECS[name])
        assert codec.encode(sample) == codec.encode(sample), name
