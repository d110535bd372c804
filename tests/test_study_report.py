"""`lossyds report --layout study [--published ...]`: the reference study's figure (a panel per
dataset) and its published numbers set beside measured runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lossyds.builder import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.eval import evaluate
from lossyds.report import make_report
from lossyds.study_report import build_facts, load_study, match_run, published_vs_measured

from .test_cli import run

REPO = Path(__file__).resolve().parents[1]

# A study file in the shipped format, for the embedded sample (images and music).
STUDY = {
    "study": "a test study",
    "source": "written by the test",
    "sets": {
        "photos": {
            "title": "Sample photos",
            "match": ["sample"],
            "task": "classification",
            "score": "top1",
            "score_label": "top-1 accuracy",
            "rate_unit": "bits per pixel",
            "models": {"org/brightness": {"baseline": 0.5, "runs": {"jpeg": 0.25, "webp": 0.125}}},
            "figure_model": "org/brightness",
            "codecs": {
                "jpeg": {"lossyds": {"codec": "jpeg", "quality": 5}},
                "webp": {"lossyds": {"codec": "webp", "quality": 0}, "note": "a codec note"},
            },
            "rates_as_published": {"jpeg": 0.3, "webp": 0.2},
        },
        "music": {
            "match": ["sample"],
            "task": "separation",
            "score": "bsseval_sdr_mean_over_frames",
            "models": {"oracle-irm": {"baseline": 9.0, "runs": {"opus": 4.0}}},
            "codecs": {"opus": {"lossyds": {"codec": "opus", "kbps": 6}}},
            "rates_as_published": {"opus": 0.07},
        },
    },
}


@pytest.fixture(scope="module")
def sample_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    runs = {
        "png": ("png", {}, None),
        "jpeg-q5": ("jpeg", {"quality": 5, "optimize": False}, None),
        "webp-q0": ("webp", {"quality": 0}, None),
        "music-flac": ("flac", {}, "music"),
        "music-opus6": ("opus", {"kbps": 6}, "music"),
    }
    for name, (codec, options, split) in runs.items():
        build(
            BuildOptions(
                codec=codec,
                out=root / name,
                codec_options=options,
                workers=1,
                metrics=["psnr"] if split is None else [],
                **({"split": split} if split else {}),
            )
        )
        if split is None:
            evaluate(root / name, "classification", "tests.task_models:brightness_classifier", cores=0)
        else:
            evaluate(root / name, "separation", cores=0)
    return {name: root / name for name in runs}


def test_published_numbers_sit_beside_the_measured_ones(sample_builds, tmp_path):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    rows = published_vs_measured([build_facts(p) for p in sample_builds.values()], load_study(study_file))
    by_build = {r["build"]: r for r in rows}
    assert set(by_build) == {"png", "jpeg-q5", "webp-q0", "music-flac", "music-opus6"}
    for name, study_run, published in (("png", "baseline", 0.5), ("jpeg-q5", "jpeg", 0.25), ("webp-q0", "webp", 0.125)):
        measured = json.loads((sample_builds[name] / "eval-classification.json").read_text())["top1"]
        bpp = json.loads((sample_builds[name] / "manifest.json").read_text())["bits"]["bpp"]
        row = by_build[name]
        assert (row["set"], row["run"], row["published"], row["measured"]) == ("photos", study_run, published, measured)
        assert row["difference"] == pytest.approx(measured - published) and row["rate_measured"] == bpp
        assert any("brightness_classifier" in note and "org/brightness" in note for note in row["notes"])
    assert by_build["webp-q0"]["rate_published"] == 0.2 and "a codec note" in by_build["webp-q0"]["notes"]
    assert by_build["png"]["rate_published"] is None
    opus = json.loads((sample_builds["music-opus6"] / "eval-separation.json").read_text())
    row = by_build["music-opus6"]
    assert (row["set"], row["run"], row["published"]) == ("music", "opus", 4.0)
    assert row["measured"] == opus["bsseval"]["sdr_mean_over_frames"]
    assert row["rate_measured"] == opus["bits"]["bits_per_audio_sample"]
    assert not any("measured with" in n for n in row["notes"])  # the same model: oracle-irm


def test_study_layout_figure_and_table_through_the_cli(sample_builds, tmp_path):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "report"
    result = run("report", *map(str, sample_builds.values()), "--layout", "study", "--published", str(study_file),
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and (out / "report-quality.png").exists()
    figure = Image.open(out / "report.png")
    # two panels side by side (photos, music), each drawn
    assert figure.size[0] > 2 * figure.size[1] * 0.9
    pixels = np.asarray(figure.convert("L"))
    for half in (pixels[:, : pixels.shape[1] // 2], pixels[:, pixels.shape[1] // 2 :]):
        assert (half < 128).mean() > 0.005
    text = (out / "report.md").read_text()
    assert "## Published vs measured" in text
    jpeg = json.loads((sample_builds["jpeg-q5"] / "eval-classification.json").read_text())["top1"]
    assert f"| photos | jpeg | jpeg-q5 | org/brightness | 0.2500 | {jpeg:.4f} | {jpeg - 0.25:.4f} |" in text
    saved = json.loads((out / "report.json").read_text())
    assert saved["layout"] == "study" and len(saved["published_vs_measured"]) == 5
    # what each panel draws: the lossy builds' scores at their rates, the lossless one as the
    # baseline, and the published points of the study's model
    photos, music = saved["figure"]
    scores = {
        name: json.loads((sample_builds[name] / "eval-classification.json").read_text())["top1"]
        for name in ("png", "jpeg-q5", "webp-q0")
    }
    rates = {n: json.loads((sample_builds[n] / "manifest.json").read_text())["bits"]["bpp"] for n in scores}
    assert (photos["title"], photos["baseline"]) == ("Sample photos", scores["png"])
    assert sorted((p["codec"], p["rate"], p["value"]) for p in photos["points"]) == [
        ("jpeg", rates["jpeg-q5"], scores["jpeg-q5"]),
        ("webp", rates["webp-q0"], scores["webp-q0"]),
    ]
    assert photos["published"] == {
        "model": "org/brightness",
        "baseline": 0.5,
        "points": [{"codec": "jpeg", "rate": 0.3, "value": 0.25}, {"codec": "webp", "rate": 0.2, "value": 0.125}],
    }
    separation = json.loads((sample_builds["music-flac"] / "eval-separation.json").read_text())
    assert music["baseline"] == separation["bsseval"]["sdr_mean_over_frames"] and len(music["points"]) == 1
    # the metrics layout takes --published too (one modality at a time)
    images = [str(sample_builds[n]) for n in ("png", "jpeg-q5", "webp-q0")]
    result = run("report", *images, "--published", str(study_file), "--out", str(tmp_path / "metrics"))
    assert result.returncode == 0, result.stderr
    assert "| photos | webp | webp-q0 |" in (tmp_path / "metrics" / "report.md").read_text()


def test_study_layout_plots_what_the_study_file_says(sample_builds, tmp_path):
    """A set whose `figure` says `plot: one-minus` (the study's Common Voice panel: 1 - WER) has
    its measured points, baseline and published points drawn as 1 - score, under its y label."""
    study = json.loads(json.dumps(STUDY))
    study["sets"]["music"]["figure"] = {"plot": "one-minus", "y_label": "one minus the score"}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    music = [sample_builds["music-flac"], sample_builds["music-opus6"]]
    make_report(music, tmp_path / "report", layout="study", published=str(study_file))
    (panel,) = json.loads((tmp_path / "report" / "report.json").read_text())["figure"]
    sdr = {
        name: json.loads((sample_builds[name] / "eval-separation.json").read_text())["bsseval"]["sdr_mean_over_frames"]
        for name in ("music-flac", "music-opus6")
    }
    assert panel["baseline"] == pytest.approx(1 - sdr["music-flac"])
    assert [p["value"] for p in panel["points"]] == [pytest.approx(1 - sdr["music-opus6"])]
    assert panel["published"]["baseline"] == pytest.approx(1 - 9.0)
    assert panel["published"]["points"] == [{"codec": "opus", "rate": 0.07, "value": pytest.approx(1 - 4.0)}]


def test_the_shipped_study_is_one_consistent_file():
    """studies/mpq-2024.yaml holds the runs, their evaluations and the published numbers: every
    published number belongs to a run of the file and a model of its evaluation, every run's
    evaluation names a known task, and every run is matched back to its own published numbers
    (the lossless ones as the baseline, each lossy one as a codec with a published score and rate)."""
    from lossyds.builder.spec import load_spec, shipped_studies
    from lossyds.builder.spec_checks import run_is_lossless
    from lossyds.eval.registry import TASKS

    assert "mpq-2024" in shipped_studies()
    assert (REPO / "manifests" / "mpq-2024.yaml").resolve() == REPO / "src" / "lossyds" / "studies" / "mpq-2024.yaml"
    grid = load_spec("mpq-2024")  # checks the file whole, its evaluations and published numbers too
    study = load_study("mpq-2024")
    runs = {run["name"]: run for run in grid["runs"]}
    assert set(grid["published"]) == set(runs)  # the study published a number for every run, and only those
    for name, numbers in grid["published"].items():
        evaluation = grid["evaluations"][runs[name]["evaluation"]]
        assert evaluation["task"] in TASKS
        assert set(numbers["scores"]) <= set(evaluation["models"])
    seen = set()
    for run_spec in grid["runs"]:
        params = {k: v for k, v in run_spec.items() if k not in ("name", "dataset", "split", "codec", "evaluation")}
        facts = {"dataset": run_spec["dataset"], "split": run_spec["split"], "codec": run_spec["codec"],
                 "params": params, "lossless": run_is_lossless(run_spec),
                 "dataset_options": {k: v for k, v in params.items() if k == "hf_config"}}  # fmt: skip
        evaluation = grid["evaluations"][run_spec["evaluation"]]
        found = match_run(facts, study, evaluation["task"])
        assert found == (
            run_spec["evaluation"],
            "baseline" if facts["lossless"] else grid["published"][run_spec["name"]]["as"],
        ), run_spec["name"]
        set_name, codec_key = found
        entry = study["sets"][set_name]
        for numbers in entry["models"].values():
            assert codec_key == "baseline" or codec_key in numbers["runs"]
        if codec_key != "baseline":
            assert entry["rates_as_published"][codec_key] > 0
        seen.add((set_name, codec_key))
    assert len(seen) == len(grid["runs"]) == 28
    # and only those: another split, another configuration, or a setting the study did not use
    # (optimized JPEG tables, replicated padding) is not the study's run
    jpeg = {"dataset": "hf:imagenet-1k", "split": "validation[:1000]", "codec": "jpeg", "lossless": False,
            "params": {"quality": 5, "optimize": False, "subsampling": "4:2:0"}}  # fmt: skip
    assert match_run(jpeg, study, "classification") == ("imagenet-1k", "jpeg")
    assert match_run(jpeg | {"params": {"quality": 5, "optimize": True}}, study, "classification") is None
    assert match_run(jpeg | {"split": "train"}, study, "classification") is None
    assert match_run(jpeg | {"codec": "png", "lossless": True, "split": "validation"}, study, "classification") is None
    mbt = {"dataset": "hf:beans", "split": "validation", "codec": "mbt2018", "lossless": False,
           "params": {"quality": 1, "padding": "replicate"}}  # fmt: skip
    assert match_run(mbt, study, "classification") is None
    xray = {"dataset": "hf:keremberke/chest-xray-classification", "split": "validation", "codec": "webp",
            "lossless": False, "params": {"quality": 0}, "dataset_options": {"hf_config": "mini"}}  # fmt: skip
    assert match_run(xray, study, "classification") is None
    assert match_run(xray | {"dataset_options": {"hf_config": "full"}}, study, "classification") == (
        "chest-xray",
        "webp",
    )
    # the study's figure numbers (results_summary.ipynb): ViT-B/16 on ImageNet, uncompressed and HiFiC
    vit = study["sets"]["imagenet-1k"]["models"]["google/vit-base-patch16-224"]
    assert (vit["baseline"], vit["runs"]["hific"]) == (0.799, 0.795)


def test_published_file_errors_are_one_sentence(tmp_path):
    with pytest.raises(UsageError, match="neither a study lossyds ships"):
        load_study(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sets": {"x": {"match": ["a"], "task": "asr"}}}))
    with pytest.raises(UsageError, match="set 'x' needs"):
        load_study(bad)
    with pytest.raises(UsageError, match="unknown report layout"):
        make_report([tmp_path], tmp_path / "o", layout="grid")


def test_quality_over_the_first_samples_is_recomputed_from_the_stored_values(built):
    """`quality_samples: N` (Common Voice's validation[:100] in the study): the means, and -10 log10
    of the mean for mse, over the first N samples in source order, read by hand with tarfile."""
    import math
    import tarfile

    from lossyds.study_report import first_samples_summaries

    folder = built("opus", metrics=["psnr", "mse"])
    records = []
    for shard in sorted(folder.glob("shard-*.tar*")):
        with tarfile.open(shard) as tar:
            records += [json.load(tar.extractfile(m)) for m in tar if m.name.endswith(".json")]
    assert len(records) >= 3
    first = records[:2]
    got = first_samples_summaries(folder, 2)
    mse = sum(r["metrics"]["mse"] for r in first) / 2
    assert got["psnr"]["mean"] == pytest.approx(sum(r["metrics"]["psnr"] for r in first) / 2)
    assert got["mse"] == pytest.approx({"mean": mse, "count": 2, "db_of_mean": -10 * math.log10(mse)})
    whole = json.loads((folder / "manifest.json").read_text())["metrics"]["mse"]["mean"]
    assert got["mse"]["mean"] != pytest.approx(whole)  # the subset is not the whole build
    assert first_samples_summaries(folder, 10_000)["mse"]["mean"] == pytest.approx(whole)
