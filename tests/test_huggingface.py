"""Hugging Face datasets as sources (`--dataset hf:PATH`), made here offline: an image +
ClassLabel set, an image + segmentation-mask set and a 48 kHz audio + transcript set, as
parquet files and as `save_to_disk` folders; and the codec options for exact reproduction."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.sources.base import decode_image
from lossyds.sources.sample import PHOTOS, skimage_data_dir

from .fixtures import hf_image_set, hf_speech_set

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))


@pytest.fixture(scope="module")
def hf_sets(tmp_path_factory):
    """{name: path}: parquet folders and save_to_disk folders of the three kinds of set."""
    root = tmp_path_factory.mktemp("hf")
    classes = hf_image_set(label_column="labels")
    segmentation = hf_image_set(label_column=None, mask_column="annotation")
    speech = hf_speech_set()
    paths = {}
    for name, dataset in (("classes", classes), ("segmentation", segmentation), ("speech", speech)):
        (root / f"{name}-parquet" / "data").mkdir(parents=True)
        dataset.to_parquet(str(root / f"{name}-parquet" / "data" / "validation-00000-of-00001.parquet"))
        datasets.DatasetDict({"validation": dataset}).save_to_disk(str(root / f"{name}-disk"))
        paths[f"{name}-parquet"] = root / f"{name}-parquet"
        paths[f"{name}-disk"] = root / f"{name}-disk"
    paths["images"], paths["labels"] = classes["image"], classes["labels"]
    paths["masks"], paths["rows"] = (
        segmentation["annotation"],
        list(speech.cast_column("audio", datasets.Audio(decode=False))),
    )
    return paths


@pytest.mark.parametrize("layout", ["parquet", "disk"])
def test_image_classification_set(hf_sets, tmp_path, layout):
    out = tmp_path / "o"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossyds.cli",
            "build",
            "--codec",
            "png",
            "--dataset",
            f"hf:{hf_sets[f'classes-{layout}']}",
        ]
        + ["--split", "validation[:4]", "--out", str(out), "--workers", "2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 4 and manifest["dataset"]["tasks"] == ["image-classification"]
    assert manifest["dataset"]["options"]["columns"] == {"image": "image", "label": "labels"}
    assert manifest["dataset"]["options"]["fingerprint"]
    samples = sorted(lossyds.open_dataset(out), key=lambda s: s["key"])
    assert [s["key"] for s in samples] == [f"validation-{i:08d}" for i in range(4)]
    for index, sample in enumerate(samples):
        assert int(sample["label"]) == hf_sets["labels"][index]
        expected = torch.from_numpy(np.array(hf_sets["images"][index])).permute(2, 0, 1)
        assert torch.equal(sample["image"], expected)  # PNG: the pixels as the dataset held them


def test_split_slices_follow_datasets_syntax(hf_sets, tmp_path):
    total = len(PHOTOS)
    for split, rows in (("validation[2:4]", [2, 3]), ("validation[-2:]", [total - 2, total - 1]), ("validation", None)):
        out = tmp_path / split.replace("[", "_").replace(":", "_").replace("]", "")
        manifest = build(
            BuildOptions(codec="png", out=out, dataset=f"hf:{hf_sets['classes-disk']}", split=split, workers=1)
        )
        expected = list(datasets.load_from_disk(str(hf_sets["classes-disk"]))["validation"].select(range(total)))
        if rows is not None:
            expected = [expected[i] for i in rows]
        assert manifest["num_samples"] == len(expected)
        assert [int(s["label"]) for s in sorted(lossyds.open_dataset(out), key=lambda s: s["key"])] == [
            row["labels"] for row in expected
        ]
    percent = build(
        BuildOptions(
            codec="png", out=tmp_path / "pct", dataset=f"hf:{hf_sets['classes-parquet']}", split="validation[:50%]"
        )
    )
    assert percent["num_samples"] == len(
        datasets.load_dataset(str(hf_sets["classes-parquet"]), split="validation[:50%]")
    )


@pytest.mark.parametrize("layout", ["parquet", "disk"])
def test_segmentation_masks_are_pixel_identical(hf_sets, tmp_path, layout):
    out = tmp_path / "o"
    manifest = build(
        BuildOptions(
            codec="jpeg",
            codec_options={"quality": 5},
            out=out,
            dataset=f"hf:{hf_sets[f'segmentation-{layout}']}",
            split="validation[:3]",
            workers=1,
        )
    )
    assert manifest["dataset"]["tasks"] == ["image-segmentation"]
    samples = sorted(lossyds.open_dataset(out), key=lambda s: s["key"])
    assert len(samples) == 3
    for index, sample in enumerate(samples):
        expected = torch.from_numpy(np.array(hf_sets["masks"][index]))
        assert torch.equal(sample["mask"].reshape(expected.shape), expected)


@pytest.mark.parametrize("layout", ["parquet", "disk"])
def test_48khz_speech_with_transcripts(hf_sets, tmp_path, layout):
    out = tmp_path / "o"
    manifest = build(
        BuildOptions(
            codec="opus",
            codec_options={"kbps": 6},
            out=out,
            dataset=f"hf:{hf_sets[f'speech-{layout}']}",
            split="validation[:3]",
            workers=1,
        )
    )
    assert manifest["dataset"]["tasks"] == ["automatic-speech-recognition"]
    assert manifest["dataset"]["options"]["columns"] == {"audio": "audio", "text": "sentence"}
    rows = hf_sets["rows"][:3]
    assert manifest["bits"]["source"] == 8 * sum(len(row["audio"]["bytes"]) for row in rows)  # what was read
    samples = sorted(lossyds.open_dataset(out), key=lambda s: s["key"])
    for row, sample in zip(rows, samples):
        source, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32", always_2d=True)
        assert sample["sample_rate"] == rate == 48000
        assert sample["audio"].shape == (1, len(source))
        assert sample["text"] == row["sentence"]


def test_columns_override_and_bad_columns(hf_sets, tmp_path):
    path = f"hf:{hf_sets['segmentation-disk']}"
    swapped = build(
        BuildOptions(
            codec="png",
            out=tmp_path / "swapped",
            dataset=path,
            split="validation[:1]",
            source_options={"column": "image=annotation,mask=image"},
        )
    )
    assert swapped["dataset"]["options"]["columns"] == {"image": "annotation", "mask": "image"}
    sample = next(iter(lossyds.open_dataset(tmp_path / "swapped")))
    assert sample["image"].shape[0] == 1  # the grayscale mask became the image
    with pytest.raises(UsageError, match="'nope'.*its columns"):
        build(
            BuildOptions(
                codec="png",
                out=tmp_path / "x",
                dataset=path,
                split="validation",
                source_options={"column": "image=nope"},
            )
        )
    with pytest.raises(UsageError, match="slicing syntax"):
        build(BuildOptions(codec="png", out=tmp_path / "w", dataset=path, split="validation[:200%]"))
    with pytest.raises(UsageError, match="no split 'test'"):
        build(BuildOptions(codec="png", out=tmp_path / "y", dataset=path, split="test[:2]"))
    with pytest.raises(UsageError, match="no audio column"):
        build(
            BuildOptions(codec="opus", codec_options={"kbps": 6}, out=tmp_path / "z", dataset=path, split="validation")
        )


def test_fingerprint_makes_a_resumed_build_refuse_a_changed_source(hf_sets, tmp_path):
    from lossyds.builder.pipeline import plan

    first = plan(
        BuildOptions(codec="png", out=tmp_path / "a", dataset=f"hf:{hf_sets['classes-disk']}", split="validation")
    )
    changed = tmp_path / "changed"
    dataset = datasets.load_from_disk(str(hf_sets["classes-disk"]))["validation"]
    datasets.DatasetDict({"validation": dataset.select([1, 0, 2, 3, 4, 5][: len(dataset)])}).save_to_disk(str(changed))
    second = plan(BuildOptions(codec="png", out=tmp_path / "a", dataset=f"hf:{changed}", split="validation"))
    assert first.settings["options"]["fingerprint"] != second.settings["options"]["fingerprint"]


# ------------------------------------------------------------------ codec options for exact reproduction


def test_jpeg_without_optimize_is_pillows_default_bytes(tmp_path):
    out = tmp_path / "o"
    result = subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "build", "--codec", "jpeg", "--quality", "5"]
        + ["--codec-opt", "optimize=false", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["codec"]["params"]["optimize"] is False
    import tarfile

    members = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            members |= {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    checked = 0
    for name, _ in PHOTOS:
        key = next(
            k[: -len(".json")]
            for k, v in members.items()
            if k.endswith(".json") and json.loads(v)["source"]["path"].endswith(name)
        )
        buffer = io.BytesIO()
        pixels = decode_image((skimage_data_dir() / name).read_bytes(), name)  # RGB, or gray for a gray photo
        Image.fromarray(pixels if pixels.shape[2] == 3 else pixels[:, :, 0]).save(buffer, format="JPEG", quality=5)
        assert members[f"{key}.jpg"] == buffer.getvalue()
        checked += 1
    assert checked == len(PHOTOS)


@pytest.mark.parametrize("padding", ["replicate", "zero-centred"])
def test_compressai_padding_round_trips_to_the_source_size(tmp_path, padding):
    pytest.importorskip("compressai")
    from lossyds import codecs
    from lossyds.types import SourceSample

    codec = codecs.get("bmshj2018-factorized", quality=1, weights="random:0", padding=padding)
    image = np.asarray(Image.open(skimage_data_dir() / "chelsea.png").convert("RGB").crop((0, 0, 100, 70)))
    data = codec.encode(SourceSample(key="k", image=image))
    decoded = codec.decode(data, {"channels": 3})
    assert decoded.shape == (3, 70, 100)
    x = codec._to_model_input(image)
    assert x.shape[1:] == (128, 128)
    if padding == "zero-centred":  # CompressAI's own rule, as the study padded
        from compressai.ops import compute_padding

        (left, right, top, bottom), _ = compute_padding(70, 100, min_div=64)
        assert float(x[:, :top].abs().sum()) == 0 and float(x[:, :, :left].abs().sum()) == 0
        assert torch.allclose(x[:, top : top + 70, left : left + 100], torch.tensor(image).permute(2, 0, 1) / 255.0)
    assert codec.manifest_entry()["params"]["padding"] == padding  # recorded, so the decoder crops the same box


def test_hf_recipe_and_cli_flags_exist():
    result = subprocess.run([sys.executable, "-m", "lossyds.cli", "build", "--help"], capture_output=True, text=True)
    assert "--hf-config" in result.stdout and "--column" in result.stdout and "--hf-streaming" in result.stdout
    assert (Path(__file__).parents[1] / "builders" / "huggingface" / "README.md").is_file()


def test_streaming_keeps_only_the_selected_rows(hf_sets, tmp_path):
    out = tmp_path / "o"
    manifest = build(
        BuildOptions(
            codec="png",
            out=out,
            dataset=f"hf:{hf_sets['classes-parquet']}",
            split="validation[1:3]",
            source_options={"hf_streaming": True},
            workers=2,
        )
    )
    assert manifest["dataset"]["options"]["rows"] == [1, 3]
    samples = sorted(lossyds.open_dataset(out), key=lambda s: s["key"])
    assert [s["key"] for s in samples] == ["validation-00000001", "validation-00000002"]
    assert [int(s["label"]) for s in samples] == hf_sets["labels"][1:3]
    again = tmp_path / "again"
    build(
        BuildOptions(
            codec="png",
            out=again,
            dataset=f"hf:{hf_sets['classes-parquet']}",
            split="validation[1:3]",
            source_options={"hf_streaming": True},
        )
    )
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()  # a stable fingerprint
