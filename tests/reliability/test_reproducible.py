"""Same source and settings: byte-identical shards, manifest and card, across runs and 1 vs 2 processes."""

from __future__ import annotations

import hashlib
import json

import pytest

from lossyds.builder import BuildOptions, build
from lossyds.manifest import BUILD_INFO_NAME


def folder_digest(directory) -> dict[str, str]:
    """Every file but build-info.json (the separated timing/host section)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != BUILD_INFO_NAME
    }


@pytest.mark.parametrize(
    "codec, rate, split",
    [
        ("webp", {"quality": 20}, None),
        ("flac", {}, "music"),
        ("bmshj2018-hyperprior", {"quality": 1, "weights": "random:0"}, None),
        ("encodec", {"kbps": 3, "weights": "random:0"}, None),
    ],
)
def test_two_runs_and_one_vs_two_processes_are_byte_identical(tmp_path, codec, rate, split):
    runs = []
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        build(
            BuildOptions(
                codec=codec, out=tmp_path / name, codec_options=rate, split=split, workers=workers, shard_samples=2
            )
        )
        runs.append(folder_digest(tmp_path / name))
    assert runs[0] == runs[1] == runs[2]
    assert {"manifest.json", "README.md"} <= set(runs[0])
    info = json.loads((tmp_path / "a" / BUILD_INFO_NAME).read_text())
    assert {"seconds", "host", "workers"} <= set(info)
