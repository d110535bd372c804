"""Bad and unusual source files, each converted by a documented rule or skipped with its key and reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from PIL import Image

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import SourceError
from lossyds.sources.sample import SAMPLE_ROOT, skimage_data_dir

from ..fixtures import corrupt_jpeg_bytes


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    folder = root / "x"
    folder.mkdir()
    photo = Image.open(skimage_data_dir() / "chelsea.png").convert("RGB").resize((120, 80))
    photo.save(folder / "good.jpg", "JPEG")
    (folder / "truncated-jpeg.jpg").write_bytes(corrupt_jpeg_bytes())
    (folder / "truncated-png.png").write_bytes(png_bytes(photo)[:300])
    photo.convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(np.linspace(0, 65535, 120 * 80).reshape(80, 120).astype(np.uint16)).save(folder / "sixteen-bit.png")
    photo.convert("RGBA").save(folder / "rgba.png")
    (folder / "png-named.JPEG").write_bytes(png_bytes(photo))
    (folder / "zero-bytes.jpg").write_bytes(b"")
    Image.new("L", (14000, 14000)).save(folder / "bomb.png", compress_level=9)  # 196 Mpx: over the default guard
    return root


EXPECTED_SKIPS = {
    "x-truncated-jpeg": "truncated-jpeg.jpg",
    "x-truncated-png": "truncated-png.png",
    "x-zero-bytes": "zero-bytes.jpg",
    "x-bomb": "over the limit",
}


def test_bad_images_are_converted_or_skipped(bad_images, tmp_path, tally):
    manifest = build(BuildOptions(codec="png", out=tmp_path / "o", dataset="imagefolder", root=bad_images, workers=1))
    tally["bad inputs tried"] += 9
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(EXPECTED_SKIPS)
    for key, fragment in EXPECTED_SKIPS.items():
        assert fragment in skipped[key], skipped[key]
    assert manifest["num_samples"] + manifest["num_skipped"] == 10
    tally["samples lost"] += 10 - manifest["num_samples"] - manifest["num_skipped"]
    samples = {s["key"]: s["image"] for s in lossyds.open_dataset(tmp_path / "o")}
    assert samples["x-cmyk"].shape == (3, 80, 120) and samples["x-palette"].shape == (3, 80, 120)
    assert samples["x-rgba"].shape == (3, 80, 120) and samples["x-png-named"].shape == (3, 80, 120)
    sixteen = samples["x-sixteen-bit"]
    assert (
        sixteen.shape == (1, 80, 120) and int(sixteen.min()) == 0 and int(sixteen.max()) == 255
    )  # scaled by full range
    with pytest.raises(SourceError, match="x-truncated-jpeg|x-bomb|x-truncated-png|x-zero-bytes"):
        build(
            BuildOptions(
                codec="png", out=tmp_path / "strict", dataset="imagefolder", root=bad_images, workers=1, strict=True
            )
        )


def test_pixel_limit_is_configurable(bad_images, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSYDS_MAX_PIXELS", "5000")
    manifest = build(
        BuildOptions(
            codec="jpeg",
            out=tmp_path / "o",
            codec_options={"quality": 50},
            dataset="imagefolder",
            root=bad_images,
            workers=1,
        )
    )
    assert any("over the limit of 5000" in s["reason"] for s in manifest["skipped"] if s["key"] == "x-good")


@pytest.fixture(scope="module")
def bad_audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    speech, rate = soundfile.read(SAMPLE_ROOT / "speech" / "sample-speech-0000.flac", dtype="float32")
    soundfile.write(root / "empty.wav", np.zeros((0,), np.float32), 16000)
    (root / "zero-bytes.wav").write_bytes(b"")
    data = (SAMPLE_ROOT / "speech" / "sample-speech-0001.flac").read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    nan = speech.copy()
    nan[1000] = np.nan
    soundfile.write(root / "nan.wav", nan, rate, subtype="FLOAT")
    inf = speech.copy()
    inf[50] = np.inf
    soundfile.write(root / "inf.wav", inf, rate, subtype="FLOAT")
    import soxr

    for target_rate in (8000, 44100, 96000):
        soundfile.write(
            root / f"rate-{target_rate}.wav", soxr.resample(speech, rate, target_rate), target_rate, subtype="PCM_16"
        )
    soundfile.write(root / "stereo.wav", np.stack([speech, speech[::-1]], axis=1), rate, subtype="PCM_16")
    soundfile.write(root / "six-channels.wav", np.stack([speech] * 6, axis=1), 48000, subtype="PCM_16")
    return root


def test_bad_and_unusual_audio(bad_audio, tmp_path, tally):
    manifest = build(
        BuildOptions(
            codec="opus",
            out=tmp_path / "o",
            codec_options={"kbps": 24},
            dataset="audiofolder",
            root=bad_audio,
            workers=1,
        )
    )
    tally["bad inputs tried"] += 10
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert "empty" in skipped and "no samples" in skipped["empty"]
    assert "zero-bytes" in skipped and "nan" in skipped and "NaN" in skipped["nan"] and "inf" in skipped
    assert "six-channels" in skipped and "6-channel" in skipped["six-channels"]
    # A truncated FLAC is either skipped, or read up to the damage (libsndfile's rule): never silently dropped.
    assert manifest["num_samples"] + manifest["num_skipped"] == 10
    tally["samples lost"] += 10 - manifest["num_samples"] - manifest["num_skipped"]
    samples = {s["key"]: s for s in lossyds.open_dataset(tmp_path / "o")}
    for name, rate, channels in (
        ("rate-8000", 8000, 1),
        ("rate-44100", 44100, 1),
        ("rate-96000", 96000, 1),
        ("stereo", 16000, 2),
    ):
        sample = samples[name]
        source, source_rate = soundfile.read(bad_audio / f"{name}.wav", dtype="float32", always_2d=True)
        assert sample["sample_rate"] == source_rate == rate and sample["audio"].shape == (channels, len(source))
    flac = build(BuildOptions(codec="flac", out=tmp_path / "f", dataset="audiofolder", root=bad_audio, workers=1))
    assert "six-channels" not in {s["key"] for s in flac["skipped"]}  # FLAC keeps 6 channels losslessly
    six = {s["key"]: s for s in lossyds.open_dataset(tmp_path / "f")}["six-channels"]
    assert six["audio"].shape[0] == 6
