"""The corpus folders under builders/: every recipe builds through the real CLI on a small
tree in its corpus's exact layout, and every README agrees with its counts.yaml."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .fixtures import (
    make_audio_folder,
    make_cityscapes,
    make_image_folder,
    make_imagenet,
    make_librispeech,
    make_musdb_hq,
)

REPO = Path(__file__).resolve().parent.parent
BUILDERS = REPO / "builders"
UNITS = {"images", "utterances", "tracks", "files"}
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
AUDIO_SUFFIXES = {".wav", ".flac"}


def files(folder: Path, pattern: str, suffixes: set[str]) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes)


def librispeech_untranscribed(root: Path, split: str) -> set[str]:
    """Utterance ids of FLAC files that no .trans.txt line names."""
    named = set()
    for transcript in root.glob(f"LibriSpeech/{split}/*/*/*.trans.txt"):
        named |= {line.split(" ", 1)[0] for line in transcript.read_text().splitlines() if line.strip()}
    return {p.stem for p in root.glob(f"LibriSpeech/{split}/*/*/*.flac")} - named


@dataclass(frozen=True)
class Corpus:
    dataset: str  # the --dataset name
    env: str  # the environment variable the recipe's root comes from
    unit: str
    make: Callable[[Path, str], object]  # builds the small tree for one split
    sources: Callable[[Path, str], int]  # source files of one split, counted with glob
    fixture_files: int  # what the fixture maker is documented to make per split
    untranscribed: Callable[[Path, str], set[str]] = lambda root, split: set()  # samples the layout's rules skip


CORPORA = {
    "imagenet": Corpus(
        "imagenet",
        "IMAGENET_ROOT",
        "images",
        make=lambda root, split: make_imagenet(root),
        sources=lambda root, split: len(
            files(root / split, "*", IMAGE_SUFFIXES) + files(root / split, "*/*", IMAGE_SUFFIXES)
        ),
        fixture_files=4,  # the recipe builds val: flat, 4 images, labels in LOC_val_solution.csv
    ),
    "cityscapes": Corpus(
        "cityscapes",
        "CITYSCAPES_ROOT",
        "images",
        make=lambda root, split: make_cityscapes(root, split=split),
        sources=lambda root, split: len(list(root.glob(f"leftImg8bit/{split}/*/*_leftImg8bit.png"))),
        fixture_files=4,
    ),
    "librispeech": Corpus(
        "librispeech",
        "LIBRISPEECH_ROOT",
        "utterances",
        make=lambda root, split: make_librispeech(root, subset=split),
        sources=lambda root, split: len(list(root.glob(f"LibriSpeech/{split}/*/*/*.flac"))),
        fixture_files=5,
        untranscribed=librispeech_untranscribed,
    ),
    "musdb": Corpus(
        "musdb",
        "MUSDB_ROOT",
        "tracks",
        make=lambda root, split: make_musdb_hq(root, split=split),
        sources=lambda root, split: len(
            list(root.glob(f"{split}/*/mixture.wav")) + list(root.glob(f"{split}/*.stem.mp4"))
        ),
        fixture_files=1,
    ),
    "imagefolder": Corpus(
        "imagefolder",
        "IMAGES_ROOT",
        "images",
        make=lambda root, split: make_image_folder(root, copies=1, split=split),
        sources=lambda root, split: len(files(root / split, "*/**/*", IMAGE_SUFFIXES)),
        fixture_files=6,
    ),
    "audiofolder": Corpus(
        "audiofolder",
        "AUDIO_ROOT",
        "files",
        make=lambda root, split: make_audio_folder(root, split=split),
        sources=lambda root, split: len(files(root / split, "**/*", AUDIO_SUFFIXES)),
        fixture_files=5,
    ),
}


def reader_class(name: str) -> type:
    """The reader registered for dataset `name`, before or after the builders -> sources rename."""
    for module_name in ("lossyds.sources", "lossyds.builders"):
        try:
            registry = importlib.import_module(module_name)
        except ImportError:
            continue
        lookup = getattr(registry, "source_class", None) or getattr(registry, "builder_class", None)
        if lookup is not None:
            return lookup(name)
    pytest.fail("neither lossyds.sources nor lossyds.builders offers source_class or builder_class")


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def readme_counts(path: Path) -> dict[str, int]:
    """The rows of the table under the README's 'Expected sample counts' heading: split -> count."""
    text = path.read_text()
    match = re.search(r"^## Expected sample counts\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{path} has no '## Expected sample counts' section"
    rows = [line.strip() for line in match.group(1).splitlines() if line.strip().startswith("|")]
    counts = {}
    for row in rows[1:]:  # rows[0] is the header
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if all(set(cell) <= set("-: ") for cell in cells):
            continue  # the separator row
        split, count = cells[0].strip("`"), cells[1]
        assert split not in counts, f"{path} lists split {split!r} twice"
        counts[split] = int(count.replace(",", ""))
    return counts


HUGGING_FACE = "huggingface"  # one folder for the hf: sources, checked by the hf tests below


def test_every_corpus_has_its_folder_and_files():
    folders = {p.name for p in BUILDERS.iterdir() if p.is_dir()}
    assert folders == set(CORPORA) | {HUGGING_FACE}
    assert (BUILDERS / "README.md").is_file()
    for name in [*CORPORA, HUGGING_FACE]:
        for filename in ("README.md", "recipe.yaml", "counts.yaml"):
            assert (BUILDERS / name / filename).is_file(), f"builders/{name}/{filename} is missing"


def test_index_lists_every_corpus():
    rows = [line for line in (BUILDERS / "README.md").read_text().splitlines() if line.startswith("|")]
    listed = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        folder = re.search(r"\[`(\w+)/`\]", cells[1]) if len(cells) > 2 else None
        if folder:
            listed[folder.group(1)] = cells[2].strip("`")
    assert listed == {name: corpus.dataset for name, corpus in CORPORA.items()} | {HUGGING_FACE: "hf:NAME_OR_PATH"}


def test_hugging_face_counts_readme_and_recipe_agree():
    folder = BUILDERS / HUGGING_FACE
    counts = load_yaml(folder / "counts.yaml")
    assert counts["unit"] == "rows"
    text = (folder / "README.md").read_text()
    match = re.search(r"^## Expected sample counts\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    rows = [line for line in match.group(1).splitlines() if line.startswith("| `")]
    listed = {}
    for row in rows:
        dataset, split, count = (cell.strip().strip("`") for cell in row.strip("|").split("|"))
        listed.setdefault(dataset, {})[split] = int(count.replace(",", ""))
    assert listed == counts["datasets"]
    recipe = load_yaml(folder / "recipe.yaml")
    for run in recipe["runs"]:
        assert run["split"] in counts["datasets"][run["dataset"]], run["name"]
    for dataset, variable in recipe["roots"].items():
        assert dataset in counts["datasets"] and f"{variable.lstrip('$')}=" in text


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_readme_counts_match_counts_yaml(name):
    counts = load_yaml(BUILDERS / name / "counts.yaml")
    assert counts.get("unit") == CORPORA[name].unit
    assert isinstance(counts.get("splits"), dict)
    assert readme_counts(BUILDERS / name / "README.md") == counts["splits"]


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_counts_and_recipe_use_the_readers_splits(name):
    corpus = CORPORA[name]
    splits = tuple(reader_class(corpus.dataset).splits)
    counts = load_yaml(BUILDERS / name / "counts.yaml")["splits"]
    assert set(counts) <= set(splits), f"{name}: {sorted(set(counts) - set(splits))} are not splits of the reader"
    assert all(isinstance(n, int) and n > 0 for n in counts.values())
    for run in load_yaml(BUILDERS / name / "recipe.yaml")["runs"]:
        if splits:  # imagefolder and audiofolder take any subfolder
            assert run.get("split") in splits


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_recipe_is_a_spec_for_its_corpus(name):
    corpus = CORPORA[name]
    recipe = load_yaml(BUILDERS / name / "recipe.yaml")
    runs = recipe.get("runs")
    assert isinstance(runs, list) and 1 <= len(runs) <= 3
    assert {run["dataset"] for run in runs} == {corpus.dataset}
    assert len({run["name"] for run in runs}) == len(runs)
    assert recipe["roots"] == {corpus.dataset: f"${corpus.env}"}
    assert f"{corpus.env}=" in (BUILDERS / name / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_recipe_builds_the_layout(name, tmp_path):
    corpus = CORPORA[name]
    recipe_path = BUILDERS / name / "recipe.yaml"
    runs = load_yaml(recipe_path)["runs"]
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    for split in sorted({run.get("split") for run in runs}):
        corpus.make(root, split)

    env = {**os.environ, corpus.env: str(root)}
    command = [
        sys.executable,
        "-m",
        "lossyds.cli",
        "build",
        "--spec",
        str(recipe_path),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"lossyds build --spec builders/{name}/recipe.yaml failed:\n{result.stderr}"

    for run in runs:
        split = run.get("split")
        total = corpus.sources(root, split)
        assert total == corpus.fixture_files, f"{name} {split}: the small tree holds {total} source files"
        dropped = corpus.untranscribed(root, split)
        manifest = json.loads((out / run["name"] / "manifest.json").read_text())
        assert manifest["dataset"]["name"] == corpus.dataset
        assert manifest["dataset"]["split"] == split
        assert manifest["num_samples"] + manifest["num_skipped"] == total
        assert manifest["num_samples"] == total - len(dropped)
        assert {entry["key"] for entry in manifest["skipped"]} == dropped
        assert all("transcript" in entry["reason"] for entry in manifest["skipped"])
    if name == "librispeech":
        assert len(dropped) == 1  # the fixture's one utterance without a transcript line
