"""The reference study in three commands, end to end and offline, on stand-ins:

    lossyds build  --spec mpq-2024 --out OUT --skip-unavailable
    lossyds eval   --spec mpq-2024 --out OUT
    lossyds report --spec mpq-2024 --builds OUT --out REPORT

The data are small local copies of all six sources (as tests/test_mpq_spec.py makes them); the
task models are tiny, randomly initialised models of each kind (seed 0), saved into a temporary
Hugging Face cache and torch hub cache under the study's own model ids; mbt2018 and EnCodec get
random weights saved under their pretrained file names, VGG-16 (for lpips-vgg) likewise; MS-ILLM
has none, so its runs are listed as unavailable. None of the scores mean anything: what is
checked is that every part runs and that the report draws and tabulates exactly what the
evaluations and builds hold.

The study file is used as shipped but for two things the stand-ins cannot take: the Common Voice
rows it leaves out (362 and 711) are rows 0 and 2 here, where the stand-in has three; and its audio
metrics are the cheap ones (psnr, mse, MUSDB's chunked mse) instead of also CDPAM, which takes
about 45 s per 3 s clip on a CPU.

demucs checks a named checkpoint's bytes against the sha256 prefix in its file name, which no
file the test can make satisfies; the eval command therefore runs with that one check switched
off (STAND_IN_EVAL), and the tiny HTDemucs is saved under htdemucs's file name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lossyds.builder.study_runs import build_runs

from .fixtures import hf_image_set, hf_speech_set, make_musdb_hq

transformers = pytest.importorskip("transformers")
pytest.importorskip("demucs")
pytest.importorskip("datasets")

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "src" / "lossyds" / "studies" / "mpq-2024.yaml"
STAND_IN_EVAL = (
    "import demucs.repo; demucs.repo.check_checksum = lambda path, checksum: None; "  # see the module docstring
    "from lossyds.cli import main; main()"
)
CLASS_NAMES = ["first", "second", "third"]  # hf_image_set's classes, and one the sets do not use


def save_in_hub_cache(hub: Path, repo_id: str, *parts) -> Path:
    """Save model and processor `parts` as the Hugging Face cache holds a downloaded model:
    hub/models--ORG--NAME/snapshots/COMMIT/ with refs/main naming the commit."""
    commit = "0" * 40
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for part in parts:
        part.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo


def tiny_classifier(seed: int):
    import torch

    torch.manual_seed(seed)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )  # fmt: skip
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    return transformers.ViTForImageClassification(config).eval(), processor


def stand_in_models(hub: Path, checkpoints: Path, weights: Path) -> None:
    """Every task model of the study under its id, and the codec weights and VGG-16 it needs."""
    import torch
    import torchvision

    from lossyds import codecs

    from .test_demucs import save_tiny_htdemucs
    from .test_hf_models import tiny_segformer
    from .test_hf_whisper import tiny_whisper

    classifiers = ["google/vit-base-patch16-224", "microsoft/resnet-18", "nateraw/vit-base-beans",
                   "lxyuan/vit-xray-pneumonia-classification"]  # fmt: skip
    for seed, repo_id in enumerate(classifiers):
        save_in_hub_cache(hub, repo_id, *tiny_classifier(seed))
    segformer = tiny_segformer(weights / "segformer", 150)
    processor = transformers.SegformerImageProcessor(size={"height": 64, "width": 64})
    save_in_hub_cache(hub, "nvidia/segformer-b0-finetuned-ade-512-512", segformer, processor)
    for repo_id in ("openai/whisper-medium", "openai/whisper-tiny"):
        model, processor = tiny_whisper(weights / repo_id.replace("/", "-"))
        save_in_hub_cache(hub, repo_id, model, processor)
    checkpoints.mkdir(parents=True, exist_ok=True)
    save_tiny_htdemucs(checkpoints / "955717e8-8726e21a.th")
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), checkpoints / "vgg16-397923af.pth")
    torch.save([torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)], checkpoints / "lpips_weights.pt")  # piq's
    for name, options in (("mbt2018", {"quality": 1, "padding": "zero-centred"}), ("encodec-48khz", {"kbps": 6})):
        codec = codecs.get(name, **options, weights="random:0")
        torch.save(codec.model.state_dict(), weights / codec.pretrained_source()[0])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The stand-ins, the caches, the environment, and the grid built and evaluated once."""
    import datasets

    root = tmp_path_factory.mktemp("study-flow")
    sizes = [(96, 64), (64, 48)]  # images of two sizes: the per-sample mean rate differs from the pooled one
    sets = {  # three rows each: enough for every part to run, as few as that
        "MPQ_IMAGENET_1K": hf_image_set(sizes, label_column="label"),
        "MPQ_ADE20K": hf_image_set(sizes, label_column=None, mask_column="annotation"),
        "MPQ_BEANS": hf_image_set(sizes, label_column="labels"),
        "MPQ_CHEST_XRAY": hf_image_set(sizes, label_column="labels"),
        "MPQ_COMMON_VOICE": hf_speech_set(),
    }
    sets = {variable: dataset.select(range(3)) for variable, dataset in sets.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPQ_", "HF_")) and k != "MUSDB_ROOT"}
    for variable, dataset in sets.items():
        datasets.DatasetDict({"validation": dataset}).save_to_disk(str(root / variable))
        env[variable] = str(root / variable)
    make_musdb_hq(root / "musdb", split="test")
    hub, torch_home, weights = root / "hf" / "hub", root / "torch", root / "weights"
    weights.mkdir()
    stand_in_models(hub, torch_home / "hub" / "checkpoints", weights)
    env |= {"MUSDB_ROOT": str(root / "musdb"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TORCH_HOME": str(torch_home), "LOSSYDS_NO_DOWNLOAD": "1",
            "LOSSYDS_WEIGHTS_DIR": str(weights), "TRANSFORMERS_VERBOSITY": "error"}  # fmt: skip
    out, spec = root / "out", stand_in_study(root / "mpq-2024.yaml")
    built = lossyds(env, "build", "--spec", str(spec), "--out", str(out), "--workers", "1", "--skip-unavailable")
    evaluated = lossyds(env, "eval", "--spec", str(spec), "--out", str(out), "--cores", "0")
    return {"env": env, "out": out, "hub": hub, "spec": spec, "built": built, "evaluated": evaluated}


def stand_in_study(path: Path) -> Path:
    """The shipped study file with the two changes the module docstring names."""
    text = SPEC.read_text()
    for old, new in (
        ("validation-00000362, validation-00000711", "validation-00000000, validation-00000002"),
        ("metrics: [psnr, cdpam, mse, cdpam-raw]", "metrics: [psnr, mse]"),
        ("metrics: [psnr, cdpam, mse@50x100000, cdpam-raw@50x100000]", "metrics: [psnr, mse@50x100000]"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def lossyds(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", STAND_IN_EVAL, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)


def test_build_computes_the_study_metrics_and_lists_what_it_cannot_build(study):
    assert study["built"].returncode == 0, study["built"].stderr
    spec = yaml.safe_load(study["spec"].read_text())
    skipped = {line.split()[1].rstrip(":") for line in study["built"].stdout.splitlines() if line.startswith("skip ")}
    assert skipped == {run["name"] for run in spec["runs"] if run["codec"] == "msillm"}
    for run in spec["runs"]:
        if run["name"] in skipped:
            continue
        manifest = json.loads((study["out"] / run["name"] / "manifest.json").read_text())
        wanted = spec["evaluations"][run["evaluation"]]["metrics"]
        assert sorted(manifest["metrics"]) == sorted(wanted), run["name"]
    plan = lossyds(study["env"], "build", "--spec", str(study["spec"]), "--out", str(study["out"]), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert {line.split()[1].rstrip(":") for line in lines if line.startswith("unavailable ")} == skipped
    present = {line.split()[1].rstrip(":") for line in lines if line.startswith("present ")}
    assert present == {run["name"] for run in build_runs(spec)} - skipped  # musdb-opus-6k--as-published too
    assert "musdb-opus-6k--as-published" in present
    assert "nothing was built" in lines[-1]


def test_eval_scores_every_run_with_each_model_and_a_second_run_does_nothing(study):
    evaluated = study["evaluated"]
    assert evaluated.returncode == 1, evaluated.stdout + evaluated.stderr  # 1: the MS-ILLM runs are not built
    assert not [line for line in evaluated.stdout.splitlines() if line.startswith("missing model")]
    assert "Traceback" not in evaluated.stderr
    spec = yaml.safe_load(study["spec"].read_text())
    for run in spec["runs"]:
        if run["codec"] == "msillm":
            continue
        evaluation = spec["evaluations"][run["evaluation"]]
        for model in evaluation["models"]:
            results = list((study["out"] / run["name"]).glob(f"eval-{evaluation['task']}--*.json"))
            assert any(json.loads(p.read_text())["model"] == model for p in results), (run["name"], model)
    again = lossyds(study["env"], "eval", "--spec", str(study["spec"]), "--out", str(study["out"]))
    assert again.returncode == 1  # the MS-ILLM runs are not built
    assert "nothing to do" in again.stdout and "scored" not in again.stdout
    not_built = {line.split()[2].rstrip(":") for line in again.stdout.splitlines() if line.startswith("missing data")}
    assert not_built == {r["name"] for r in spec["runs"] if r["codec"] == "msillm"}


def test_a_missing_model_is_listed_alone_with_where_to_put_it(study):
    out = study["out"]
    for path in out.glob("*/eval-asr--hf-openai-whisper-tiny--*.json"):
        path.unlink()
    plan = lossyds(study["env"], "eval", "--spec", str(study["spec"]), "--out", str(out), "--dry-run", "--cores", "0")
    assert plan.returncode == 0, plan.stderr
    to_run = [line for line in plan.stdout.splitlines() if line.startswith("to run ")]
    assert to_run and all("whisper-tiny" in line and "about" in line for line in to_run), plan.stdout
    assert not list(out.glob("*/eval-asr--hf-openai-whisper-tiny--*.json"))  # the dry run wrote nothing
    cached = study["hub"] / "models--openai--whisper-tiny"
    shutil.rmtree(cached)
    listed = lossyds(study["env"], "eval", "--spec", str(study["spec"]), "--out", str(out))
    assert listed.returncode == 1
    models = [line for line in listed.stdout.splitlines() if line.startswith("missing model")]
    assert len(models) == 1 and "hf:openai/whisper-tiny" in models[0] and str(cached) in models[0], listed.stdout


def per_sample_mean(folder: Path) -> float:
    """The study's rate by hand: np.mean over samples of payload bits over the sample's own size
    (pixels, or audio samples of every channel), read from the KEY.json members with tarfile."""
    import tarfile

    ratios = []
    for shard in sorted(folder.glob("shard-*.tar*")):
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    size = meta["height"] * meta["width"] if "height" in meta else meta["num_frames"] * meta["channels"]
                    ratios.append(meta["payload_bits"] / size)
    return float(np.mean(ratios))


def test_report_draws_the_studys_figure_the_quality_figure_and_a_table_per_dataset(study, tmp_path):
    from scipy import stats

    report = tmp_path / "report"
    result = lossyds(
        study["env"], "report", "--spec", str(study["spec"]), "--builds", str(study["out"]), "--out", str(report)
    )
    assert result.returncode == 0, result.stderr
    assert (report / "report.png").stat().st_size > 10_000 and (report / "report-quality.png").exists()
    saved = json.loads((report / "report.json").read_text())
    spec = yaml.safe_load(study["spec"].read_text())
    assert [p["evaluation"] for p in saved["figure"]] == [
        "imagenet-1k", "ade20k", "common-voice", "chest-xray", "beans", "musdb18"]  # fmt: skip
    out = study["out"]
    for panel in saved["figure"]:
        entry = spec["evaluations"][panel["evaluation"]]
        assert (panel["title"], panel["study_xlim"]) == (entry["figure"]["title"], entry["figure"]["xlim"])
        names = entry["figure"]["codec_names"]
        runs = [r for r in spec["runs"] if r["evaluation"] == panel["evaluation"] and r["codec"] != "msillm"]
        lossy = [r for r in runs if r["codec"] not in ("png", "flac")]
        for variant in ("corrected", "as-published"):
            got = {p["codec"]: (p["rate"], p["value"]) for p in panel[variant]["points"]}
            assert set(got) == {names[spec["published"][r["name"]]["as"]] for r in lossy}, (panel["title"], variant)
        for run in lossy:
            folder = out / run["name"]
            task, model = entry["task"], entry["models"][0]
            slug = model.replace(":", "-").replace("/", "-")
            result = json.loads((folder / f"eval-{task}--{slug}--corrected.json").read_text())
            score = {"top1": result.get("top1"), "miou": result.get("miou"), "wer_raw": result.get("wer_raw"),
                     "bsseval_sdr_mean_over_frames": (result.get("bsseval") or {}).get("sdr_mean_over_frames")}  # fmt: skip
            value = score[entry["score"]]
            value = 1 - value if entry["figure"].get("plot") == "one-minus" else value
            name = names[spec["published"][run["name"]]["as"]]
            corrected = {p["codec"]: p for p in panel["corrected"]["points"]}[name]
            manifest = json.loads((folder / "manifest.json").read_text())
            pooled = manifest["bits"]["bpp"] if "bpp" in manifest["bits"] else manifest["bits"]["bits_per_audio_sample"]
            assert corrected["value"] == pytest.approx(value) and corrected["rate"] == pytest.approx(pooled)
            as_published = {p["codec"]: p for p in panel["as-published"]["points"]}[name]
            own = folder.parent / f"{run['name']}--as-published"  # a variant with build switches of its own
            by_hand = per_sample_mean(own if own.exists() else folder)
            assert as_published["rate"] == pytest.approx(by_hand, rel=1e-9)
            if "bpp" in manifest["bits"]:  # the stand-in images differ in size, so the two rates differ
                assert abs(by_hand - pooled) > 1e-6 * pooled
        hific = [p for p in panel["published"]["points"] if p["codec"] == "HiFiC"]
        if hific:  # drawn at its rate in bits, the rate the study printed (bytes) beside it
            assert hific[0]["rate"] == pytest.approx(8 * hific[0]["rate_as_published"])
    text = (report / "report.md").read_text()
    for entry in spec["evaluations"].values():
        assert f"## {entry['title']}" in text
    assert "| published | lossyds as published | lossyds corrected |" in text
    # the correlations across codecs: from per-run means, as scipy computes them, and printed
    for item in saved["correlations"]:
        entry = spec["evaluations"][item["evaluation"]]
        assert item["metric"] in entry["metrics"]
        if item["pearson"] is not None:
            xs, ys = zip(*item["points"])
            assert item["pearson"] == pytest.approx(stats.pearsonr(xs, ys)[0])
            assert (
                f"| {item['evaluation']} | {item['metric']} | {item['score']} | {item['runs']} | {item['pearson']:.3f} |"
                in text
            )
    means = [
        json.loads((out / r["name"] / "manifest.json").read_text())["metrics"]["lpips-vgg"]["mean"]
        for r in spec["runs"]
        if r["evaluation"] == "beans" and r["codec"] not in ("png", "msillm")
    ]
    beans = next(c for c in saved["correlations"] if (c["evaluation"], c["metric"]) == ("beans", "lpips-vgg"))
    assert sorted(x for x, _ in beans["points"]) == pytest.approx(sorted(means))
    assert sorted(beans["codecs"]) == ["JPEG", "WEBP", "mbt2018"]  # each point is a codec's run
    defined = [c for c in saved["correlations"] if c["pearson"] is not None]
    assert defined and all(math.isfinite(c["pearson"]) for c in defined)  # random models: some scores vary


def test_a_missing_demucs_model_names_its_file_url_and_folder(tmp_path, monkeypatch):
    from lossyds.study_eval import model_missing

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reason = model_missing("demucs:htdemucs", "separation")
    assert "955717e8-8726e21a.th" in reason and "dl.fbaipublicfiles.com" in reason
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "955717e8-8726e21a.th") in reason
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "955717e8-8726e21a.th").write_bytes(b"x")
    assert model_missing("demucs:htdemucs", "separation") is None
    assert "no such checkpoint" in model_missing(f"demucs:{tmp_path / 'absent.th'}", "separation")
    assert model_missing(f"hf:{tmp_path}", "classification") is None  # a model folder is taken as it is


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["eval", "--spec", "mpq-2024", "--out", "OUT", "--task", "asr"], "--task"),
        (["eval", "--spec", "mpq-2024", "--out", "OUT", "--model", "hf:x", "--limit", "3"], "--model, --limit"),
        (["eval", "--spec", "mpq-2024", "--out", "OUT", "--exclude", "a,b"], "--exclude"),
        (["eval", "BUILD", "--task", "asr", "--out", "OUT"], "go with --spec"),
        (["report", "BUILD", "--spec", "mpq-2024", "--builds", "OUT", "--out", "R"], "not from DIRECTORIES"),
        (["build", "--codec", "jpeg", "--quality", "5", "--out", "OUT", "--dry-run"], "go with --spec"),
    ],
)
def test_flags_the_study_file_decides_are_refused_with_spec(tmp_path, arguments, named):
    """With --spec the study file says what each run is scored with: a flag that would be ignored is refused."""
    from click.testing import CliRunner

    from lossyds.cli import main

    (tmp_path / "BUILD").mkdir()
    arguments = [str(tmp_path / a) if a in ("OUT", "BUILD", "R") else a for a in arguments]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and named in result.output, result.output
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "R").exists()


def test_a_failing_evaluation_is_named_and_the_rest_of_the_grid_still_runs(tmp_path):
    """eval --spec on a grid whose first evaluation's model raises: that one is listed as failed in
    one sentence, the other is scored, the exit status is 1, and a rerun retries only the failed one."""
    from click.testing import CliRunner

    from lossyds.cli import main

    spec = {
        "evaluations": {
            "broken": {"task": "classification", "models": ["tests.reliability.test_spec_eval_faults:raises"]},
            "fine": {"task": "classification", "models": ["tests.task_models:brightness_classifier"]},
        },
        "runs": [
            {"name": "photos-jpeg", "evaluation": "broken", "dataset": "sample", "codec": "jpeg", "quality": 5},
            {"name": "photos-webp", "evaluation": "fine", "dataset": "sample", "codec": "webp", "quality": 10},
        ],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    built = CliRunner().invoke(main, ["build", "--spec", str(path), "--out", str(out)])
    assert built.exit_code == 0, built.output
    first = CliRunner().invoke(main, ["eval", "--spec", str(path), "--out", str(out)])
    assert first.exit_code == 1
    assert "failed photos-jpeg (corrected, tests.reliability.test_spec_eval_faults:raises)" in first.output
    assert "scored photos-webp" in first.output
    assert list((out / "photos-webp").glob("eval-classification--*.json"))
    assert not list((out / "photos-jpeg").glob("eval-classification--*.json"))
    again = CliRunner().invoke(main, ["eval", "--spec", str(path), "--out", str(out)])
    assert again.exit_code == 1 and "failed photos-jpeg" in again.output and "scored photos-webp" not in again.output
