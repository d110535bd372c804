"""Kills, a full disk, and damaged shards: nothing half-written under a final name, every damage named."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lossyds
import lossyds.shards.writer
from lossyds.builder import BuildOptions, build
from lossyds.errors import LossydsError, ShardError
from lossyds.manifest import JOURNAL_NAME
from lossyds.verify import verify

from ..conftest import file_hashes
from ..fixtures import make_image_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("src"), copies=5)  # 30 images


def cli_build(out: Path, source: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lossyds.cli",
        "build",
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
        "2",
        "--out",
        str(out),
    ]


def test_repeated_sigkill_then_resume_matches_an_uninterrupted_build(photos, tmp_path, tally):
    reference = tmp_path / "reference"
    subprocess.run(cli_build(reference, photos), check=True, capture_output=True)
    rng = random.Random(1234)
    out = tmp_path / "killed"
    kills = 0
    for _ in range(3):
        before = len(list(out.glob("shard-*.tar")))
        target = before + rng.randint(1, 2)
        process = subprocess.Popen(cli_build(out, photos), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and len(list(out.glob("shard-*.tar"))) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))  # land anywhere inside the next shard
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert not (out / "manifest.json").exists() or process.returncode == 0
    subprocess.run(cli_build(out, photos), check=True, capture_output=True)
    assert file_hashes(out) == file_hashes(reference)
    assert kills >= 1
    tally["kills survived"] += kills


class FullDisk:
    """A file whose writes fail with ENOSPC once `budget` bytes have been written."""

    def __init__(self, handle, budget: list[int]):
        self._handle = handle
        self._budget = budget

    def write(self, data):
        self._budget[0] -= len(data)
        if self._budget[0] < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def test_full_disk_leaves_no_half_shard_and_resumes(photos, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    build(
        BuildOptions(
            codec="jpeg",
            out=reference,
            codec_options={"quality": 40},
            dataset="imagefolder",
            root=photos,
            split="train",
            shard_samples=4,
            workers=1,
        )
    )
    budget = [200_000]  # enough for the first shard or two, not for the build
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle, budget) if "w" in mode and str(path).endswith(".partial") else handle

    monkeypatch.setattr(lossyds.shards.writer, "open", failing_open, raising=False)
    out = tmp_path / "full"
    with pytest.raises(LossydsError, match="No space left on device"):
        build(
            BuildOptions(
                codec="jpeg",
                out=out,
                codec_options={"quality": 40},
                dataset="imagefolder",
                root=photos,
                split="train",
                shard_samples=4,
                workers=1,
            )
        )
    monkeypatch.undo()
    assert not list(out.glob("*.partial"))
    journal = json.loads((out / JOURNAL_NAME).read_text())
    finished = {s["path"] for s in journal["shards"]}
    assert finished and {p.name for p in out.glob("shard-*")} == finished  # only complete shards under final names
    build(
        BuildOptions(
            codec="jpeg",
            out=out,
            codec_options={"quality": 40},
            dataset="imagefolder",
            root=photos,
            split="train",
            shard_samples=4,
            workers=1,
        )
    )
    assert file_hashes(out) == file_hashes(reference)


def test_every_corrupt_byte_is_named_by_verify_and_the_loader(photos, tmp_path, tally):
    clean = tmp_path / "clean"
    build(
        BuildOptions(
            codec="jpeg",
            out=clean,
            codec_options={"quality": 40},
            dataset="imagefolder",
            root=photos,
            split="train",
            shard_samples=10,
            workers=1,
        )
    )
    shard = sorted(clean.glob("shard-*"))[1]
    size = shard.stat().st_size
    rng = random.Random(7)
    import shutil

    for trial in range(12):
        damaged = tmp_path / f"d{trial}"
        shutil.copytree(clean, damaged)
        target = damaged / shard.name
        data = bytearray(target.read_bytes())
        position = rng.randrange(0, size - 10240)  # not in the final zero padding
        data[position] ^= 0xFF
        target.write_bytes(bytes(data))
        with pytest.raises(ShardError) as verified:
            verify(damaged)
        assert shard.name in str(verified.value)
        try:
            list(lossyds.open_dataset(damaged))
            loader_named = False  # the flip hit tar padding between members: harmless to every sample
        except ShardError as exc:
            loader_named = shard.name in str(exc)
            assert loader_named
        if loader_named:
            dataset = lossyds.open_dataset(damaged, on_error="skip")
            with pytest.warns(UserWarning):
                kept = list(dataset)
            assert dataset.errors and shard.name in dataset.errors[0]
            clean_images = {s["key"]: s["image"] for s in lossyds.open_dataset(clean)}
            assert len(kept) >= 20  # the two undamaged shards at least
            for sample in kept:  # whatever is served is exactly what was stored
                assert torch.equal(sample["image"], clean_images[sample["key"]])
        tally["corruptions detected"] += 1
