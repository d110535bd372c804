"""The same sources and settings give the same bitstream bytes: golden payload hashes of the sample builds."""

from __future__ import annotations

import hashlib
import json
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

from .conftest import STANDARD_CODECS

GOLDEN = json.loads((Path(__file__).parent / "golden_payloads.json").read_text())
SETTINGS = {
    "jpeg-q5": ("jpeg", {"quality": 5}),
    "webp-q0": ("webp", {"quality": 0}),
    "png": ("png", {}),
    "opus-6": ("opus", {"kbps": 6}),
    "mp3-32": ("mp3", {"kbps": 32}),
    "flac": ("flac", {}),
}


def payload_digest(directory: Path, extension: str) -> str:
    """sha256 over every payload member, read with Python's tarfile (an independent reader)."""
    digest = hashlib.sha256()
    for shard in sorted(directory.glob("shard-*")):
        with tarfile.open(shard) as tar:
            for info in sorted(tar.getmembers(), key=lambda i: i.name):
                if info.name.endswith("." + extension):
                    digest.update(info.name.encode() + b"\0" + tar.extractfile(info).read())
    return digest.hexdigest()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_sample_payloads_match_their_golden_hash(built, name):
    installed = {package: version(package) for package in GOLDEN["libraries"]}
    if installed != GOLDEN["libraries"]:
        pytest.skip(f"golden hashes hold for {GOLDEN['libraries']}; installed: {installed}")
    codec, rate = SETTINGS[name]
    directory = built(codec) if STANDARD_CODECS[codec] == rate else built(codec, rate=rate)
    extension = json.loads((directory / "manifest.json").read_text())["codec"]["extension"]
    assert payload_digest(directory, extension) == GOLDEN["payloads"][name]
