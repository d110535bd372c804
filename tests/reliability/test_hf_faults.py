"""Hugging Face sources under attack: single-split save_to_disk folders and --split, streamed
against read-whole builds, column roles of the wrong type, absolute local paths, push to a URL."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest
from click.testing import CliRunner

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.cli import main
from lossyds.errors import UsageError
from lossyds.manifest import BUILD_INFO_NAME

from ..fixtures import hf_image_set, hf_speech_set

datasets = pytest.importorskip("datasets")

WORDS = ["cat", "dog", "cat", "bird", "dog", "cat"]


def offline_env(home) -> dict[str, str]:
    return {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    for name, value in offline_env(tmp_path_factory.getbasetemp() / "hf-home").items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """{name: folder}: parquet folders (images with a ClassLabel and a string column; 48 kHz
    speech) and save_to_disk folders of one split, as the docs' recipe and datasets make them."""
    root = tmp_path_factory.mktemp("hf-faults")
    images = hf_image_set(label_column="label")
    images = images.add_column("strlabel", WORDS[: len(images)]).add_column("score", [0.5] * len(images))
    paths = {"images": root / "images", "speech": root / "speech"}
    for name, dataset in (("images", images), ("speech", hf_speech_set())):
        (paths[name] / "data").mkdir(parents=True)
        dataset.to_parquet(str(paths[name] / "data" / "validation-00000-of-00001.parquet"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in offline_env(tmp_path_factory.getbasetemp() / "hf-home").items():
            patch.setenv(name, value)
        for name, split in (("validation-only", "validation"), ("validation-2-5", "validation[2:5]")):
            datasets.load_dataset(str(paths["images"]), split=split).save_to_disk(str(root / name))
            paths[name] = root / name
    images.save_to_disk(str(root / "unnamed"))  # a Dataset that never had a split: none recorded
    paths["unnamed"] = root / "unnamed"
    paths["labels"] = list(images["label"])
    return paths


def cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def keys_and_labels(out) -> list[tuple[str, int]]:
    return sorted((s["key"], int(s["label"])) for s in lossyds.open_dataset(out))


def folder_files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.name != BUILD_INFO_NAME}


def sample_jsons(directory) -> list[dict]:
    metas = []
    for shard in sorted(directory.glob("shard-*")):
        with tarfile.open(shard) as tar:
            metas += [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    return metas


# ------------------------------------------------------------------ 4: a single-split save_to_disk folder


@pytest.mark.parametrize("split", ["train", "nosuch", "test[:2]"])
def test_single_split_folder_refuses_a_split_it_does_not_hold(sets, tmp_path, split, tally):
    code, _, stderr = cli(
        "build",
        "--codec",
        "png",
        "--dataset",
        f"hf:{sets['validation-only']}",
        "--split",
        split,
        "--out",
        tmp_path / "o",
    )
    tally["bad inputs tried"] += 1
    assert code == 2, stderr
    line = one_sentence(stderr)
    assert "'validation'" in line and repr(split) in line
    assert not (tmp_path / "o").exists()


def test_single_split_folder_builds_its_own_split_and_slices_of_it(sets, tmp_path):
    path = f"hf:{sets['validation-only']}"
    whole = build(BuildOptions(codec="png", out=tmp_path / "all", dataset=path, split="validation", workers=1))
    assert whole["num_samples"] == len(sets["labels"]) and whole["dataset"]["split"] == "validation"
    build(BuildOptions(codec="png", out=tmp_path / "some", dataset=path, split="validation[2:4]", workers=1))
    assert keys_and_labels(tmp_path / "some") == [(f"validation-{i:08d}", sets["labels"][i]) for i in (2, 3)]


def test_a_sliced_folder_keeps_the_split_row_numbers(sets, tmp_path, tally):
    """load_dataset(..., split='validation[2:5]').save_to_disk(P) holds rows 2 to 4."""
    path = f"hf:{sets['validation-2-5']}"
    build(BuildOptions(codec="png", out=tmp_path / "a", dataset=path, split="validation[2:5]", workers=1))
    assert keys_and_labels(tmp_path / "a") == [(f"validation-{i:08d}", sets["labels"][i]) for i in (2, 3, 4)]
    build(BuildOptions(codec="png", out=tmp_path / "b", dataset=path, split="validation[3:5]", workers=1))
    assert keys_and_labels(tmp_path / "b") == [(f"validation-{i:08d}", sets["labels"][i]) for i in (3, 4)]
    for split in ("validation", "validation[:3]", "train[2:5]"):
        with pytest.raises(UsageError, match=r"'validation\[2:5\]'"):
            build(BuildOptions(codec="png", out=tmp_path / "x", dataset=path, split=split, workers=1))
        tally["bad inputs tried"] += 1


def test_a_folder_without_a_recorded_split_is_datasets_train_split(sets, tmp_path, tally):
    path = f"hf:{sets['unnamed']}"
    manifest = build(BuildOptions(codec="png", out=tmp_path / "a", dataset=path, split="train[:2]", workers=1))
    assert manifest["num_samples"] == 2 and manifest["dataset"]["split"] == "train[:2]"
    with pytest.raises(UsageError, match=r"does not record.*'train'.*'validation'"):
        build(BuildOptions(codec="png", out=tmp_path / "b", dataset=path, split="validation", workers=1))
    tally["bad inputs tried"] += 1


# ------------------------------------------------------------------ 5 and 11: streamed = read whole


@pytest.mark.parametrize(
    "name, codec, rate, split",
    [("images", "png", {}, "validation[2:5]"), ("speech", "opus", {"kbps": 6}, "validation[1:3]")],
)
def test_streamed_and_read_whole_builds_are_byte_identical(sets, tmp_path, name, codec, rate, split):
    folders = []
    for streaming in (False, True):
        out = tmp_path / f"streaming-{streaming}"
        build(
            BuildOptions(
                codec=codec,
                codec_options=rate,
                out=out,
                dataset=f"hf:{sets[name]}",
                split=split,
                source_options={"hf_streaming": streaming},
                workers=1,
            )
        )
        folders.append(folder_files(out))
    first = int(split.split("[")[1].split(":")[0])
    paths = sorted(meta["source"]["path"] for meta in sample_jsons(tmp_path / "streaming-True"))
    assert paths[0].endswith(f"#{first}"), paths
    assert {n: hashlib.sha256(b).hexdigest() for n, b in folders[0].items()} == {
        n: hashlib.sha256(b).hexdigest() for n, b in folders[1].items()
    }


# ------------------------------------------------------------------ 11: column roles of the wrong type


def test_a_string_label_column_stores_its_values_as_class_names(sets, tmp_path):
    out = tmp_path / "o"
    code, _, stderr = cli(
        "build",
        "--codec",
        "png",
        "--dataset",
        f"hf:{sets['images']}",
        "--split",
        "validation[1:5]",
        "--column",
        "label=strlabel",
        "--out",
        out,
    )
    assert code == 0, stderr
    samples = sorted(lossyds.open_dataset(out), key=lambda s: s["key"])
    names = sorted(set(WORDS[1:5]))
    assert [s["class_name"] for s in samples] == WORDS[1:5]
    assert [int(s["label"]) for s in samples] == [names.index(w) for w in WORDS[1:5]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["tasks"] == ["image-classification"]


@pytest.mark.parametrize(
    "name, codec, column, kind, needs",
    [
        ("images", "png", "image=label", "ClassLabel", "Image"),
        ("images", "png", "mask=strlabel", "string", "Image"),
        ("images", "png", "label=score", "float", "ClassLabel"),
        ("images", "png", "text=label", "ClassLabel", "string"),
        ("images", "png", "label=image", "Image", "ClassLabel"),
        ("speech", "flac", "audio=sentence", "string", "Audio"),
    ],
)
def test_a_column_of_the_wrong_type_is_refused_before_building(sets, tmp_path, name, codec, column, kind, needs, tally):
    out = tmp_path / "o"
    code, _, stderr = cli(
        "build",
        "--codec",
        codec,
        "--dataset",
        f"hf:{sets[name]}",
        "--split",
        "validation",
        "--column",
        column,
        "--out",
        out,
    )
    tally["bad inputs tried"] += 1
    assert code == 2, stderr
    line = one_sentence(stderr)
    role, _, column_name = column.partition("=")
    assert repr(column_name) in line and kind in line and needs in line and role in line, line
    assert not out.exists()


# ------------------------------------------------------------------ 14: no absolute local path leaks


@pytest.mark.parametrize("name", ["images", "validation-only"])
def test_a_local_folder_is_recorded_by_name_not_by_its_absolute_path(sets, tmp_path, name):
    out = tmp_path / "o"
    code, _, stderr = cli(
        "build", "--codec", "png", "--dataset", f"hf:{sets[name]}", "--split", "validation[:2]", "--out", out
    )
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == f"hf:{name}"
    assert sorted(m["source"]["path"] for m in sample_jsons(out)) == [f"{name}#0", f"{name}#1"]
    code, pushed, stderr = cli("push", out, "--repo", "someone/x", "--license", "mit", "--dry-run")
    assert code == 0, stderr
    here = str(sets[name].parent)
    texts = {"manifest": (out / "manifest.json").read_text(), "card": (out / "README.md").read_text(), "push": pushed}
    texts["samples"] = json.dumps(sample_jsons(out))
    for what, text in texts.items():
        assert here not in text and str(sets[name].resolve().parent) not in text, what


def test_a_relative_path_is_recorded_as_given(sets, tmp_path, monkeypatch):
    monkeypatch.chdir(sets["images"].parent)
    manifest = build(
        BuildOptions(codec="png", out=tmp_path / "o", dataset="hf:images", split="validation[:1]", workers=1)
    )
    assert manifest["dataset"]["name"] == "hf:images"
    assert [m["source"]["path"] for m in sample_jsons(tmp_path / "o")] == ["images#0"]


def test_push_to_a_url_names_the_url_intact(tally):
    code, _, stderr = cli("push", "s3://bucket/some/build", "--repo", "someone/x", "--dry-run")
    tally["bad inputs tried"] += 1
    assert code == 2
    line = one_sentence(stderr)
    assert "s3://bucket/some/build" in line and "s3:/bucket" not in line.replace("s3://", ""), line
