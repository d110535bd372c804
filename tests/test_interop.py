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


WEBDATASET_CODECS = {
    "jpeg": {},
    "png": {},
    "avif": {},
    "opus": {},
    "mp3": {},
    "flac": {},
    "bmshj2018-factorized": {"rate": {"quality": 1}, "weights": "random:0", "limit": 2},
    "encodec": {"rate": {"kbps": 1.5}, "weights": "random:0", "limit": 2},
}


@pytest.mark.parametrize("codec", sorted(WEBDATASET_CODECS))
def test_webdataset_decoder_gives_the_loaders_samples(built, codec):
    import torch
    import webdataset as wds

    import lossyds

    options = dict(WEBDATASET_CODECS[codec])
    weights = options.pop("weights", None)
    if weights is not None:
        pytest.importorskip("compressai" if codec.startswith("bmshj") else "encodec")
        rate = dict(options.pop("rate"))
        rate["weights"] = weights
        options["rate"] = rate
    split = "music" if codec == "mp3" else None  # mp3 with the music clip: stems as attachments
    directory = built(codec, split, shard_samples=2, **options)
    manifest = json.loads((directory / "manifest.json").read_text())
    urls = [str(directory / s["path"]) for s in manifest["shards"]]
    expected = {s["key"]: s for s in lossyds.open_dataset(directory)}
    decoder = lossyds.webdataset_decoder(directory / "manifest.json")
    got = {s["key"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(decoder)}
    assert got.keys() == expected.keys() and got
    for key, sample in got.items():
        sample = {name: value for name, value in sample.items() if not name.startswith("__")}  # webdataset's own
        assert sample.keys() == expected[key].keys()
        for name, value in sample.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, expected[key][name]), (key, name)
            elif isinstance(value, dict):
                assert all(torch.equal(v, expected[key][name][k]) for k, v in value.items())
            else:
                assert value == expected[key][name], (key, name)
    if manifest["modality"] == "image" and weights is None:
        extension = manifest["codec"]["extension"]
        handled = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode(decoder))
        for sample in handled:
            image, reference = sample[extension], expected[sample["__key__"]]["image"]
            if codec == "avif" and reference.shape[0] == 1:  # AVIF holds gray as color (module docstring)
                assert image.shape == (3, *reference.shape[1:])
                continue
            assert torch.equal(image, reference)
            assert sample["json"]["payload_bits"] == expected[sample["__key__"]]["payload_bits"]
