"""Hugging Face: dataset card, push plan, offline `datasets` loading, streaming from URLs."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.hub import hf_transform, plan_push, push

from .fixtures import make_audio_folder, make_image_folder


def card_metadata(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_push_dry_run_prints_files_and_a_card_whose_patterns_match_the_shards(built):
    directory = built("jpeg", shard_samples=2)
    result = subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "push", str(directory), "--repo", "someone/photos-q5", "--dry-run"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("--- README.md", 1)[0]
    listed = [line.strip() for line in listing.splitlines() if line.startswith("  ")]
    shards = sorted(p.name for p in directory.glob("shard-*.tar*"))
    assert listed == ["manifest.json", "README.md", *shards]
    card = result.stdout.split("--- README.md (dataset card) ---\n", 1)[1]
    metadata = card_metadata(card)
    (config,) = metadata["configs"]
    (data_files,) = config["data_files"]
    assert data_files["split"] == "photos"
    assert sorted(n for n in os.listdir(directory) if fnmatch.fnmatch(n, data_files["path"])) == shards
    assert metadata["task_categories"] == ["image-classification"] and metadata["license"] == "other"
    assert "someone/photos-q5" in card and "bpp" in card


def test_push_refuses_unknown_license_and_files_outside_the_folder(tmp_path):
    source = make_image_folder(tmp_path / "src", copies=1)
    out = tmp_path / "out"
    lossyds_build = [
        sys.executable,
        "-m",
        "lossyds.cli",
        "build",
        "--codec",
        "jpeg",
        "--quality",
        "40",
        "--dataset",
        "imagefolder",
        "--root",
        str(source),
        "--split",
        "train",
        "--out",
        str(out),
    ]
    subprocess.run(lossyds_build, check=True, capture_output=True)
    with pytest.raises(UsageError, match="--license"):
        plan_push(out, "me/pets")
    assert plan_push(out, "me/pets", license="cc-by-4.0").card.count("license: cc-by-4.0") == 1
    with pytest.raises(UsageError, match="OWNER/NAME"):
        plan_push(out, "../../etc", license="mit")
    shard = out / "shard-000000.tar"
    outside = tmp_path / "outside.tar"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(UsageError, match="outside|regular file"):
        plan_push(out, "me/pets", license="mit")


def test_push_uploads_exactly_the_planned_files(built, tmp_path, monkeypatch):
    """The network call itself cannot run here: capture its arguments instead."""
    import huggingface_hub

    directory = built("opus")
    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo, **kwargs: calls.append(("create", repo, kwargs))
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kwargs: calls.append(("upload", kwargs)))
    plan = plan_push(directory, "me/speech")
    push(plan, private=True, revision="v1")
    (_, repo, create), (_, call) = calls
    assert repo == "me/speech" and create == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert call["allow_patterns"] == plan.files and call["repo_type"] == "dataset"
    assert call["folder_path"] == directory.resolve() and call["revision"] == "v1"
    assert (directory / "README.md").read_text() == plan.card


@pytest.fixture
def offline_hf(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    return lambda directory, **kw: datasets.load_dataset(str(directory), cache_dir=str(tmp_path / "cache"), **kw)


def test_load_dataset_on_a_built_folder_decodes_standard_members(built, offline_hf):
    directory = built("webp", shard_samples=2)
    manifest = json.loads((directory / "manifest.json").read_text())
    rows = offline_hf(directory, split="photos")
    assert len(rows) == manifest["num_samples"]
    row = rows[0]
    assert row["webp"].size == (row["json"]["width"], row["json"]["height"])  # a PIL image
    assert row["cls"] == row["json"]["targets"]["label"]


def test_hf_transform_decodes_what_datasets_leaves_as_bytes(built, offline_hf):
    directory = built("avif", shard_samples=4)
    rows = offline_hf(directory, split="photos")
    assert isinstance(rows[0]["avif"], bytes)
    decoded = rows.with_transform(hf_transform(directory))
    ours = {s["key"]: s["image"] for s in lossyds.open_dataset(directory)}
    for index in range(len(rows)):
        row = decoded[index]
        assert torch.equal(row["image"], ours[row["__key__"]])


def test_the_card_declares_every_records_json_fields_where_datasets_would_infer_from_five(tmp_path, offline_hf):
    """Records 6-8 carry a target field the first five lack: datasets' own inference (the card
    without features) drops it, the declared features keep it."""
    root = make_audio_folder(tmp_path / "src")
    folder = root / "train"
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    for i, clip in enumerate(sorted(folder.glob("*.flac"))[:3]):
        shutil.copy(clip, folder / f"zz-extra-{i}.flac")  # sorted after the five clips
        lines.append(json.dumps({"file_name": f"zz-extra-{i}.flac", "text": "extra", "speaker": f"s{i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "flac"
    build(BuildOptions(codec="flac", out=out, dataset="audiofolder", root=root, split="train", workers=1))
    metadata = card_metadata((out / "README.md").read_text())
    declared = {f["name"]: f for f in metadata["dataset_info"]["features"]}
    assert declared["flac"] == {"name": "flac", "dtype": "audio"} and declared["txt"]["dtype"] == "string"
    rows = offline_hf(out, split="train")
    assert [r["json"]["targets"].get("speaker") for r in rows][-3:] == ["s0", "s1", "s2"]
    assert rows[0]["json"]["crc32"]["flac"] > 0  # int64 as declared, not inferred
    inferred = tmp_path / "inferred"
    shutil.copytree(out, inferred)
    del metadata["dataset_info"]
    card = (inferred / "README.md").read_text().split("---\n", 2)[2]
    (inferred / "README.md").write_text(f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n{card}")
    rows = offline_hf(inferred, split="train")
    assert [r["json"]["targets"].get("speaker") for r in rows][-3:] == [None, None, None]


def test_card_member_types_follow_datasets_webdataset_reader():
    from datasets.packaged_modules.webdataset.webdataset import WebDataset

    from lossyds import codecs
    from lossyds.hub import AUDIO_MEMBERS, IMAGE_MEMBERS

    assert set(IMAGE_MEMBERS) <= set(WebDataset.IMAGE_EXTENSIONS)
    assert set(AUDIO_MEMBERS) <= set(WebDataset.AUDIO_EXTENSIONS)
    for name in codecs.available():
        extension = codecs.codec_class(name).extension
        assert (extension in WebDataset.IMAGE_EXTENSIONS) == (extension in IMAGE_MEMBERS), name
        assert (extension in WebDataset.AUDIO_EXTENSIONS) == (extension in AUDIO_MEMBERS), name
    assert {"cls", "txt"} <= set(WebDataset.DECODERS)


def test_json_types_unify_and_refuse_what_datasets_cannot_hold():
    from lossyds.jsontypes import MIXED, declared, type_of, unify

    a = type_of({"n": 1, "tags": [], "t": {}, "x": None})
    b = type_of({"n": 2.5, "tags": ["q"], "t": {}, "y": True})
    both = unify(a, b)
    assert both == {
        "struct": {
            "n": "float64",
            "tags": {"list": "string"},
            "t": {"struct": {}},
            "x": "null",
            "y": "bool",
        }
    }
    assert declared(both) == {"struct": {"n": "float64", "tags": {"list": "string"}, "x": "null", "y": "bool"}}
    assert unify(type_of({"n": "one"}), type_of({"n": 1})) == {"struct": {"n": MIXED}}
    assert declared(unify(type_of({"n": "one"}), type_of({"n": 1}))) is None
    manifest = {"codec": {"extension": "jpg"}, "json_types": unify(type_of({"n": [1]}), type_of({"n": {"a": 1}}))}
    from lossyds.hub import card_features

    assert card_features(manifest) is None
    # every source skipped: no record, so nothing to declare, and the card is still written
    assert card_features({"codec": {"extension": "jpg"}, "json_types": "null"}) is None


def test_open_dataset_streams_from_an_fsspec_url(built):
    directory = built("mp3", shard_samples=2)
    local = [(s["key"], s["audio"]) for s in lossyds.open_dataset(directory)]
    remote = [(s["key"], s["audio"]) for s in lossyds.open_dataset(f"file://{directory}")]
    assert [k for k, _ in local] == [k for k, _ in remote]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(local, remote))
    loader = torch.utils.data.DataLoader(lossyds.open_dataset(f"file://{directory}"), batch_size=None, num_workers=2)
    assert sorted(s["key"] for s in loader) == sorted(k for k, _ in local)
    with pytest.raises(UsageError, match="manifest.json"):
        lossyds.open_dataset(f"file://{directory}/nothing-here")
