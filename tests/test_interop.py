"""Shards are read by the webdataset package and by Hugging Face datasets, offline."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("codec", ["jpeg", "opus"])  # plain tar and (audio default) gzip-compressed tar
def test_webdataset_package_reads_every_sample(built, codec):
    import webdataset as wds

    directory = built(codec, shard_samples=2)
    manifest = json.loads((directory / "manifest.json").read_text())
    urls = [str(directory / s["path"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == manifest["num_samples"]
    extension = manifest["codec"]["extension"]
    assert sum(len(s[extension]) for s in samples) * 8 == manifest["bits"]["payload"]
    if codec == "jpeg":
        decoded = list(
            wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb8").to_tuple("jpg", "cls")
        )
        assert len(decoded) == manifest["num_samples"] and decoded[0][0].ndim == 3


@pytest.mark.parametrize("codec", ["jpeg", "flac", "avif", "opus"])
def test_hugging_face_datasets_loads_the_shards_offline(built, codec, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    if codec in ("flac", "opus"):
        try:
            import torchcodec.decoders  # noqa: F401  (datasets decodes audio through it)
        except Exception as exc:  # its FFmpeg libraries are missing: .ci/run installs them
            pytest.skip(f"torchcodec cannot load FFmpeg here: {exc}")
    directory = built(codec, shard_samples=2)
    manifest = json.loads((directory / "manifest.json").read_text())
    files = [str(directory / s["path"]) for s in manifest["shards"]]
    loaded = datasets.load_dataset(
        "webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "cache")
    )
    assert len(loaded) == manifest["num_samples"]
    row = loaded[0]
    extension = manifest["codec"]["extension"]
    assert row["json"]["payload_bits"] > 0
    if codec == "jpeg":
        assert row["jpg"].size[0] > 0  # decoded to a PIL image by datasets
    elif codec == "avif":
        assert isinstance(row["avif"], bytes) and len(row["avif"]) * 8 == row["json"]["payload_bits"]
    else:
        assert extension in row and row[extension] is not None
