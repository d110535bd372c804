"""manifests/mpq-2024.yaml, the reference study's grid, runs offline against small local
stand-ins for each of its sources and says which runs it skipped and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .fixtures import hf_image_set, hf_speech_set, make_musdb_hq

datasets = pytest.importorskip("datasets")
REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "manifests" / "mpq-2024.yaml"
NEEDS_WEIGHTS = {"mbt2018", "msillm", "encodec-48khz"}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Environment variables pointing the spec's roots at stand-ins in the sources' layouts."""
    root = tmp_path_factory.mktemp("mpq")
    sets = {
        "MPQ_IMAGENET_1K": hf_image_set(label_column="label"),
        "MPQ_ADE20K": hf_image_set(label_column=None, mask_column="annotation"),
        "MPQ_BEANS": hf_image_set(label_column="labels"),
        "MPQ_CHEST_XRAY": hf_image_set(label_column="labels"),
        "MPQ_COMMON_VOICE": hf_speech_set(),
    }
    env = {}
    for variable, dataset in sets.items():
        datasets.DatasetDict({"validation": dataset}).save_to_disk(str(root / variable))
        env[variable] = str(root / variable)
    make_musdb_hq(root / "musdb", split="test")
    env["MUSDB_ROOT"] = str(root / "musdb")
    return env, {variable: len(dataset) for variable, dataset in sets.items()}


def test_the_study_grid_runs_on_stand_ins(stand_ins, tmp_path):
    env_roots, rows = stand_ins
    empty = tmp_path / "no-weights"
    empty.mkdir()
    env = {
        **os.environ,
        **env_roots,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "LOSSYDS_NO_DOWNLOAD": "1",
        "LOSSYDS_WEIGHTS_DIR": str(empty),
        "TORCH_HOME": str(empty),
    }
    out = tmp_path / "grid"
    command = [sys.executable, "-m", "lossyds.cli", "build", "--spec", str(SPEC), "--out", str(out)]
    refused = subprocess.run([*command, "--workers", "1"], env=env, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "--skip-unavailable" in refused.stderr, refused.stderr
    result = subprocess.run(
        [*command, "--workers", "1", "--skip-unavailable"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(SPEC.read_text())
    skipped = {line.split()[1].rstrip(":"): line for line in result.stdout.splitlines() if line.startswith("skip ")}
    for run in spec["runs"]:
        if run["codec"] in NEEDS_WEIGHTS:
            assert run["name"] in skipped, run["name"]
            assert "weights" in skipped[run["name"]] or "package" in skipped[run["name"]], skipped[run["name"]]
            continue
        assert run["name"] not in skipped, skipped.get(run["name"])
        manifest = json.loads((out / run["name"] / "manifest.json").read_text())
        assert manifest["num_skipped"] == 0, manifest["skipped"]
        assert manifest["dataset"]["name"] == run["dataset"]
        variable = spec["roots"][run["dataset"]].lstrip("$")
        if run["dataset"] != "musdb":
            assert manifest["num_samples"] == rows[variable]
        if run["codec"] == "jpeg":
            assert manifest["codec"]["params"] == {"quality": 5, "optimize": False, "subsampling": "4:2:0"}
        if run["dataset"] == "hf:scene_parse_150":
            assert manifest["dataset"]["tasks"] == ["image-segmentation"]
        if run["dataset"].startswith("hf:mozilla"):
            assert manifest["dataset"]["tasks"] == ["automatic-speech-recognition"]
    # every codec of the grid is one lossyds has, and each set has its lossless baseline
    from lossyds import codecs

    assert {run["codec"] for run in spec["runs"]} <= set(codecs.available())
    for dataset in spec["roots"]:
        assert {run["codec"] for run in spec["runs"] if run["dataset"] == dataset} & {"png", "flac"}
