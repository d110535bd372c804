"""--shard-format tar.zst: written reproducibly, read by the loader and verify, a cut keeps its prefix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

import lossyds
import lossyds.shards.stream
from lossyds.errors import ShardError
from lossyds.verify import verify

from .conftest import build_sample, file_hashes


def test_zstd_shards_hold_the_same_samples_as_gzip(built, tmp_path):
    gz = built("opus", shard_samples=2)
    zst = tmp_path / "zst"
    build_sample(zst, "opus", shard_samples=2, shard_format="tar.zst")
    manifest = json.loads((zst / "manifest.json").read_text())
    assert all(shard["path"].endswith(".tar.zst") for shard in manifest["shards"])
    verify(zst, decode=True)
    expected = {s["key"]: s["audio"] for s in lossyds.open_dataset(gz)}
    got = {s["key"]: s["audio"] for s in lossyds.open_dataset(zst)}
    assert got.keys() == expected.keys()
    for key, audio in got.items():
        assert torch.equal(audio, expected[key])
    again = tmp_path / "again"
    build_sample(again, "opus", shard_samples=2, shard_format="tar.zst")
    assert file_hashes(again) == file_hashes(zst)  # byte-reproducible


def test_cli_takes_tar_zst(tmp_path):
    out = tmp_path / "o"
    result = subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "build", "--codec", "jpeg", "--quality", "5"]
        + ["--shard-format", "tar.zst", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-000000.tar.zst"]


def test_cut_zstd_shard_serves_its_prefix_and_large_shards_spill_to_disk(tmp_path, monkeypatch):
    out = tmp_path / "o"
    build_sample(out, "flac", shard_format="tar.zst")
    clean = {s["key"]: s["audio"] for s in lossyds.open_dataset(out)}
    monkeypatch.setattr(lossyds.shards.stream, "SPILL_BYTES", 4096)  # decompress into a temporary file
    spilled = {s["key"]: s["audio"] for s in lossyds.open_dataset(out)}
    assert all(torch.equal(spilled[key], clean[key]) for key in clean)
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (shard,) = damaged.glob("shard-*.tar.zst")
    shard.write_bytes(shard.read_bytes()[: int(shard.stat().st_size * 0.7)])
    dataset = lossyds.open_dataset(damaged, on_error="skip")
    with pytest.warns(UserWarning, match="truncated zstandard"):
        kept = list(dataset)
    assert 0 < len(kept) < len(clean)
    assert all(torch.equal(sample["audio"], clean[sample["key"]]) for sample in kept)
    with pytest.raises(ShardError, match=shard.name):
        verify(damaged)
