"""Building the sample with every standard codec, checked by independent readers."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import pytest
from PIL import Image

from lossyds.builder import BuildOptions, build
from lossyds.errors import BuildStateError, SourceError
from lossyds.manifest import JOURNAL_NAME

from .conftest import STANDARD_CODECS, build_sample, file_hashes
from .fixtures import corrupt_jpeg_bytes, make_image_folder


def tar_members(directory: Path) -> dict[str, bytes]:
    members = {}
    for shard in sorted(directory.glob("shard-*.tar*")):
        with tarfile.open(shard) as tar:  # Python's own reader
            for info in tar:
                members[info.name] = tar.extractfile(info).read()
    return members


@pytest.mark.parametrize("codec", sorted(STANDARD_CODECS))
def test_every_standard_codec_builds_standard_files_and_counts_bits_exactly(built, codec):
    directory = built(codec)
    manifest = json.loads((directory / "manifest.json").read_text())
    members = tar_members(directory)
    extension = manifest["codec"]["extension"]
    bitstreams = {name: data for name, data in members.items() if name.endswith("." + extension)}
    assert len(bitstreams) == manifest["num_samples"] > 0
    for name, data in bitstreams.items():
        if manifest["modality"] == "image":
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        else:
            with av.open(io.BytesIO(data)) as container:
                frames = sum(1 for _ in container.decode(audio=0))
            assert frames > 0, name
        meta = json.loads(members[name.rsplit(".", 1)[0] + ".json"])
        assert meta["payload_bits"] == len(data) * 8
    assert manifest["bits"]["payload"] == sum(len(d) for d in bitstreams.values()) * 8
    assert manifest["bits"]["container"] == sum(p.stat().st_size for p in directory.glob("shard-*.tar*")) * 8
    assert manifest["bits"]["container"] == sum(s["bytes"] for s in manifest["shards"]) * 8
    assert manifest["bits"]["per_sample_mean"] == manifest["bits"]["payload"] / manifest["num_samples"]
    if manifest["modality"] == "image":
        pixels = sum(
            json.loads(d)["height"] * json.loads(d)["width"] for n, d in members.items() if n.endswith(".json")
        )
        assert manifest["bits"]["bpp"] == pytest.approx(manifest["bits"]["payload"] / pixels)
    else:
        metas = [json.loads(d) for n, d in members.items() if n.endswith(".json")]
        seconds = sum(m["num_frames"] / m["sample_rate"] for m in metas)
        assert manifest["bits"]["kbps"] == pytest.approx(manifest["bits"]["payload"] / seconds / 1000)
        audio_samples = sum(m["num_frames"] * m["channels"] for m in metas)
        assert manifest["bits"]["bits_per_audio_sample"] == pytest.approx(manifest["bits"]["payload"] / audio_samples)
    assert manifest["codec"]["weights"] is None
    assert manifest["num_skipped"] == 0 and manifest["skipped"] == []


def test_targets_are_stored_losslessly_beside_the_bitstream(built):
    members = tar_members(built("jpeg"))
    assert members["sample-photo-0001.cls"] == b"0"  # chelsea -> "cat", class 0 of the sorted names
    members = tar_members(built("opus"))
    assert members["sample-speech-0000.txt"] == b"THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"


def test_music_stems_are_lossless_references(built, tmp_path):
    from lossyds.sources.sample import SAMPLE_ROOT

    members = tar_members(built("opus", split="music", rate={"kbps": 32}))
    for stem in ("drums", "bass", "other", "vocals"):
        assert (
            members[f"sample-music-sample-track.stems.{stem}.flac"]
            == (SAMPLE_ROOT / "music" / "sample-track" / f"{stem}.flac").read_bytes()
        )


def test_audio_defaults_to_compact_gzip_shards_readable_by_tarfile(built):
    manifest = json.loads((built("opus") / "manifest.json").read_text())
    assert all(s["path"].endswith(".tar.gz") for s in manifest["shards"])
    assert manifest["bits"]["payload_to_container"] > 0.9  # plain tar: ~0.4 on these short clips
    image = json.loads((built("jpeg") / "manifest.json").read_text())
    assert all(s["path"].endswith(".tar") for s in image["shards"])


def test_building_twice_gives_byte_identical_shards(tmp_path):
    for codec in ("jpeg", "opus", "mp3", "avif"):
        first = build_sample(tmp_path / f"{codec}-a", codec, shard_samples=2)
        second = build_sample(tmp_path / f"{codec}-b", codec, shard_samples=2, workers=2)
        assert first == second
        assert file_hashes(tmp_path / f"{codec}-a") == file_hashes(tmp_path / f"{codec}-b")


def test_finished_folder_is_refused_without_force(tmp_path):
    build_sample(tmp_path, "jpeg")
    with pytest.raises(BuildStateError, match="--force"):
        build_sample(tmp_path, "jpeg")
    before = file_hashes(tmp_path)
    build_sample(tmp_path, "jpeg", force=True)
    assert file_hashes(tmp_path) == before


def test_interrupted_build_resumes_to_identical_result(tmp_path):
    reference = tmp_path / "reference"
    build_sample(reference, "webp", shard_samples=2)

    interrupted = tmp_path / "interrupted"
    calls = []

    def stop_after_four(done, total):
        calls.append(done)
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(
            BuildOptions(codec="webp", out=interrupted, codec_options={"quality": 0}, shard_samples=2, workers=1),
            stop_after_four,
        )
    assert (interrupted / JOURNAL_NAME).exists() and not (interrupted / "manifest.json").exists()
    assert not list(interrupted.glob("*.partial"))
    with pytest.raises(BuildStateError, match="other settings"):
        build_sample(interrupted, "webp", shard_samples=3)
    build_sample(interrupted, "webp", shard_samples=2)
    assert file_hashes(interrupted) == file_hashes(reference)
    assert not (interrupted / JOURNAL_NAME).exists()


def test_sigkill_mid_build_then_rerun_matches_uninterrupted(tmp_path):
    source = make_image_folder(tmp_path / "src", copies=6)
    args = [
        "--codec",
        "avif",
        "--quality",
        "30",
        "--dataset",
        "imagefolder",
        "--root",
        str(source),
        "--split",
        "train",
        "--shard-samples",
        "3",
        "--workers",
        "1",
    ]
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "build", *args, "--out", str(reference)], check=True, capture_output=True
    )

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "lossyds.cli", "build", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("*.tar"))) < 2:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "manifest.json").exists(), "the build finished before it could be killed"
    subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "build", *args, "--out", str(killed)], check=True, capture_output=True
    )
    assert file_hashes(killed) == file_hashes(reference)


def test_unreadable_source_is_skipped_with_its_reason(tmp_path):
    source = make_image_folder(tmp_path / "src", copies=1)
    (source / "train" / "cat" / "broken.jpg").write_bytes(corrupt_jpeg_bytes())
    (source / "train" / "cat" / "empty.png").write_bytes(b"")
    manifest = build(
        BuildOptions(
            codec="jpeg",
            out=tmp_path / "out",
            codec_options={"quality": 50},
            dataset="imagefolder",
            root=source,
            split="train",
            workers=1,
        )
    )
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"cat-broken", "cat-empty"}
    assert "broken.jpg" in skipped["cat-broken"]
    assert manifest["num_samples"] + manifest["num_skipped"] == 8
    with pytest.raises(SourceError, match="cat-broken"):
        build(
            BuildOptions(
                codec="jpeg",
                out=tmp_path / "strict",
                codec_options={"quality": 50},
                dataset="imagefolder",
                root=source,
                split="train",
                workers=1,
                strict=True,
            )
        )
