"""The reference study (studies/mpq-2024.yaml, shipped with lossyds, `--spec mpq-2024`) runs
offline against small local stand-ins for each of its sources and says which runs it skipped
and why; by name from any folder, and with no data at all it lists every run as unavailable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .fixtures import hf_image_set, hf_speech_set, make_musdb_hq

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "src" / "lossyds" / "studies" / "mpq-2024.yaml"
NEEDS_WEIGHTS = {"mbt2018", "msillm", "encodec-48khz"}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Environment variables pointing the spec's roots at stand-ins in the sources' layouts."""
    datasets = pytest.importorskip("datasets")
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
    # The study's quality metrics need VGG-16 (lpips) and take CDPAM ~45 s a clip on a CPU: this test
    # is about the data, so it builds a copy without them (tests/test_study_flow.py computes them).
    spec_file = tmp_path / "mpq-2024.yaml"
    spec_file.write_text(re.sub(r"(?m)^    metrics: \[.*\]$", "    metrics: []", SPEC.read_text()))
    command = [sys.executable, "-m", "lossyds.cli", "build", "--spec", str(spec_file), "--out", str(out)]
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


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No data, no weights, no network: none of the study's roots set, an empty Hugging Face cache."""
    empty = tmp_path / "no-weights"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPQ_") and k != "MUSDB_ROOT"}
    return env | {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "LOSSYDS_NO_DOWNLOAD": "1",
        "LOSSYDS_WEIGHTS_DIR": str(empty),
        "TORCH_HOME": str(empty),
    }


def test_the_study_is_found_by_name_from_outside_the_repository(tmp_path):
    """The installed package finds its study by name wherever it runs (as .ci/smoke-wheel checks
    with the built wheel); with no data here every run is listed as unavailable, with its reason."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-m", "lossyds.cli", "build", "--spec", "mpq-2024", "--skip-unavailable", "--out", "X"]
    result = subprocess.run(
        command, cwd=elsewhere, env=offline_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    from lossyds.builder.study_runs import build_runs

    runs = [run["name"] for run in build_runs(yaml.safe_load(SPEC.read_text()))]  # with musdb-opus-6k--as-published
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skip ")]
    assert [line.split()[1].rstrip(":") for line in skipped] == runs
    assert all(len(line.split(": ", 1)[1]) > 10 for line in skipped)  # each with its reason
    assert not (elsewhere / "X").exists() or not any((elsewhere / "X").iterdir())
    unknown = subprocess.run(
        [*command[:5], "mpq-2042", "--out", "X"], cwd=elsewhere, capture_output=True, text=True, timeout=600
    )
    assert unknown.returncode == 2 and "mpq-2024" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1


STUDY_RUN = {"name": "photos-jpeg-q5", "dataset": "sample", "split": "photos", "codec": "jpeg", "quality": 5}
EVALUATION = {"task": "classification", "models": ["hf:org/model"], "score": "top1"}


@pytest.mark.parametrize(
    ("study", "fragment"),
    [
        (
            {"published": {"other-run": {"scores": {"hf:org/model": 0.5}, "as": "jpeg", "rate": 0.2}}},
            "no run of that name",
        ),
        ({"evaluations": {"e": EVALUATION | {"task": "captioning"}}}, "not a lossyds task"),
        ({"runs": [STUDY_RUN | {"evaluation": "f"}]}, "names evaluation 'f'"),
        (
            {"published": {"photos-jpeg-q5": {"scores": {"hf:other/model": 0.5}, "as": "jpeg", "rate": 0.2}}},
            "not a model",
        ),
        ({"published": {"photos-jpeg-q5": {"scores": {"hf:org/model": 0.5}}}}, "need `as`"),
        ({"evaluations": {"e": EVALUATION | {"score": "bleu"}}}, "score 'bleu'"),
        ({"evaluations": {"e": EVALUATION | {"metrics": ["cdpam"]}}}, "not one of lossyds.s image metrics"),
    ],
)
def test_a_study_file_that_does_not_agree_with_itself_is_one_sentence(tmp_path, study, fragment):
    from lossyds.builder.spec import load_spec
    from lossyds.errors import UsageError

    spec = {"runs": [STUDY_RUN | {"evaluation": "e"}], "evaluations": {"e": EVALUATION}} | study
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UsageError, match=fragment):
        load_spec(path)


def test_a_plain_grid_and_a_study_file_by_path_still_load(tmp_path):
    from lossyds.builder.spec import load_spec
    from lossyds.errors import UsageError
    from lossyds.study_report import load_study

    plain = tmp_path / "grid.yaml"
    plain.write_text(yaml.safe_dump({"runs": [STUDY_RUN]}))
    assert load_spec(plain)["runs"][0]["name"] == "photos-jpeg-q5"
    baseline = STUDY_RUN | {"name": "photos-png", "codec": "png", "evaluation": "e"}
    del baseline["quality"]
    study = {"runs": [baseline, STUDY_RUN | {"evaluation": "e"}], "evaluations": {"e": EVALUATION}}
    study["published"] = {
        "photos-png": {"scores": {"hf:org/model": 0.75}},
        "photos-jpeg-q5": {"scores": {"hf:org/model": 0.5}, "as": "jpeg", "rate": 0.2},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    entry = load_study(path)["sets"]["e"]
    assert entry["match"] == ["sample"] and entry["codecs"]["jpeg"]["lossyds"] == {"codec": "jpeg", "quality": 5}
    assert entry["models"] == {"org/model": {"baseline": 0.75, "runs": {"jpeg": 0.5}}}
    # a model with no score on the lossless run has no baseline to draw
    del study["published"]["photos-png"]
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UsageError, match="needs baseline"):
        load_study(path)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"as_published": {"bild": {}}}, "unknown keys bild"),
        ({"as_published": {"eval": {"no_such_switch": True}}}, "unknown options no_such_switch"),
        ({"as_published": {"build": {"quality": 500}}}, r"'photos-jpeg-q5--as-published' \(as published\)"),
        ({"as_published": {"why": 3}}, "must be text"),
        ({"metrics": "psnr"}, "list of metric names"),
    ],
)
def test_a_runs_as_published_variant_is_checked_with_the_file(tmp_path, change, fragment):
    from lossyds.builder.spec import load_spec
    from lossyds.errors import UsageError

    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump({"runs": [STUDY_RUN | {"evaluation": "e"} | change], "evaluations": {"e": EVALUATION}})
    )
    with pytest.raises(UsageError, match=fragment):
        load_spec(path)


@pytest.mark.parametrize(
    ("figure", "fragment"),
    [({"xlim": [1, 0]}, "must be \\[low, high\\]"), ({"plot": "log"}, "score or one-minus"), ({"titel": "x"}, "titel")],
)
def test_a_figure_panel_is_checked(tmp_path, figure, fragment):
    from lossyds.builder.spec import load_spec
    from lossyds.errors import UsageError

    path = tmp_path / "study.yaml"
    evaluation = EVALUATION | {"figure": figure}
    path.write_text(yaml.safe_dump({"runs": [STUDY_RUN | {"evaluation": "e"}], "evaluations": {"e": evaluation}}))
    with pytest.raises(UsageError, match=fragment):
        load_spec(path)


def test_variants_metrics_and_folders_of_a_study():
    """A build switch gives the as-published variant a build of its own; an evaluation-only switch
    scores the corrected build; a run with neither has one variant; metrics come from the
    evaluation unless the run names its own."""
    from lossyds.builder.study_runs import build_runs, run_metrics, study_runs

    spec = {
        "evaluations": {"e": {**EVALUATION, "metrics": ["psnr"], "as_published": {"eval": {"limit": 2}, "why": "w"}}},
        "runs": [
            STUDY_RUN | {"evaluation": "e", "as_published": {"build": {"quality": 6}, "why": "relabelled"}},
            STUDY_RUN | {"name": "other", "evaluation": "e", "metrics": ["ssim"]},
            STUDY_RUN | {"name": "plain"},
        ],
    }
    found = {(v.name, v.variant): v for v in study_runs(spec)}
    own = found[("photos-jpeg-q5", "as-published")]
    assert (own.folder, own.own_build, own.run["quality"], own.why) == (
        "photos-jpeg-q5--as-published", True, 6, ("w", "relabelled"))  # fmt: skip
    shared = found[("other", "as-published")]
    assert (shared.folder, shared.own_build, shared.eval_options) == ("other", False, {"limit": 2})
    assert ("plain", "as-published") not in found
    assert [r["name"] for r in build_runs(spec)] == ["photos-jpeg-q5", "photos-jpeg-q5--as-published", "other", "plain"]
    assert "as_published" not in build_runs(spec)[1]
    assert [run_metrics(spec, r) for r in spec["runs"]] == [["psnr"], ["ssim"], []]


def test_a_dry_run_measures_missing_runs_on_a_few_samples_and_builds_nothing(tmp_path):
    from lossyds.builder.spec import run_spec

    path = tmp_path / "grid.yaml"
    runs = [STUDY_RUN, STUDY_RUN | {"name": "photos-png", "codec": "png"}]
    del runs[1]["quality"]
    path.write_text(yaml.safe_dump({"runs": runs}))
    out = tmp_path / "out"
    lines: list[str] = []
    common = {"force": False, "workers": 1, "skip_unavailable": False, "limit": None, "progress": None}
    assert run_spec(path, out, echo=lines.append, dry_run=True, **common) == []
    assert not out.exists()  # nothing built, nothing claimed
    assert [line.split(":")[0] for line in lines[:2]] == ["missing photos-jpeg-q5", "missing photos-png"]
    assert all("6 samples, about" in line and "MB (measured on 3 samples here)" in line for line in lines[:2])
    assert lines[-1].startswith("to build: about") and "nothing was built" in lines[-1]
    run_spec(path, out, echo=lines.append, progress=lambda label, function, options: function(options), **{
        k: v for k, v in common.items() if k != "progress"})  # fmt: skip
    lines.clear()
    run_spec(path, out, echo=lines.append, dry_run=True, **common)
    assert lines[:2] == [
        f"present photos-jpeg-q5: {out / 'photos-jpeg-q5'}",
        f"present photos-png: {out / 'photos-png'}",
    ]
