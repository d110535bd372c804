"""Quality metrics at build time, task evaluation with real models, and the rate report."""

from __future__ import annotations

import json
import math
import shutil

import jiwer
import numpy as np
import pytest
import torch
from PIL import Image

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.eval import evaluate
from lossyds.eval.oracle import oracle_irm
from lossyds.eval.separation import sdr
from lossyds.report import make_report

from .fixtures import make_cityscapes


@pytest.fixture(scope="module")
def speech_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    builds = {}
    for name, codec, rate in (
        ("flac", "flac", {}),
        ("opus6", "opus", {"kbps": 6}),
        ("encodec6", "encodec", {"kbps": 6, "weights": "random:0"}),
    ):
        build(
            BuildOptions(
                codec=codec,
                out=root / name,
                codec_options=rate,
                workers=1,
                metrics=["si-sdr", "stoi", "pesq", "mel-distance"],
            )
        )
        builds[name] = root / name
    return builds


def test_asr_wer_is_computed_from_real_recognition(speech_builds):
    results = {name: evaluate(path, "asr") for name, path in speech_builds.items()}
    lossless = results["flac"]
    hypotheses = [s["hypothesis"] for s in lossless["samples"]]
    assert any(hypotheses), "pocketsphinx recognised nothing"
    assert lossless["wer"] == pytest.approx(jiwer.wer([s["reference"] for s in lossless["samples"]], hypotheses))
    assert all(0 <= r["wer"] <= 2 for r in results.values())
    assert results["opus6"]["bits"]["kbps"] == pytest.approx(
        json.loads((speech_builds["opus6"] / "manifest.json").read_text())["bits"]["kbps"]
    )
    written = json.loads((speech_builds["flac"] / "eval-asr.json").read_text())
    assert written["wer"] == lossless["wer"] and "per_sample_mean" in written["bits"]


def test_audio_metrics_rank_lossless_above_lossy(speech_builds):
    means = {name: json.loads((path / "manifest.json").read_text())["metrics"] for name, path in speech_builds.items()}
    assert means["flac"]["stoi"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert means["flac"]["si-sdr"]["mean"] > 60 > means["opus6"]["si-sdr"]["mean"]
    assert means["flac"]["mel-distance"]["mean"] < means["opus6"]["mel-distance"]["mean"]
    sample = next(iter(lossyds.open_dataset(speech_builds["opus6"])))
    assert sample["payload_bits"] > 0


def test_report_over_three_builds(speech_builds, tmp_path):
    for path in speech_builds.values():
        if not (path / "eval-asr.json").exists():
            evaluate(path, "asr")
    png, markdown, data = make_report(list(speech_builds.values()), tmp_path / "report")
    image = Image.open(png)
    assert image.size[0] > 800 and image.size[1] > 300
    pixels = np.asarray(image.convert("L"))
    assert (pixels < 128).mean() > 0.005  # something is drawn
    rows = json.loads(data.read_text())["rows"]
    assert len(rows) == 3
    text = markdown.read_text()
    assert "kbps" in text and "wer" in text
    for row in rows:
        result = json.loads((speech_builds[row["build"].rsplit("/", 1)[1]] / "eval-asr.json").read_text())
        assert f"{result['wer']:.4f}" in text and row["scores"]["wer"] == result["wer"]


def test_image_metrics_and_classification_with_a_callable(tmp_path):
    build(BuildOptions(codec="png", out=tmp_path / "png", workers=1, metrics=["psnr", "ssim"]))
    build(
        BuildOptions(
            codec="jpeg",
            out=tmp_path / "jpg",
            codec_options={"quality": 5},
            workers=1,
            metrics=["psnr", "ssim", "ms-ssim"],
        )
    )
    lossless = json.loads((tmp_path / "png" / "manifest.json").read_text())["metrics"]
    lossy = json.loads((tmp_path / "jpg" / "manifest.json").read_text())["metrics"]
    assert lossless["psnr"]["count"] == 0  # infinite PSNR is not averaged
    assert lossless["ssim"]["mean"] == pytest.approx(1.0)
    assert 15 < lossy["psnr"]["mean"] < 40 and lossy["ssim"]["mean"] < 0.99
    result = evaluate(tmp_path / "jpg", "classification", "tests.task_models:brightness_classifier")
    assert result["count"] == 6 and 0 <= result["top1"] <= result["top5"] <= 1
    assert result["bits"]["bpp"] == json.loads((tmp_path / "jpg" / "manifest.json").read_text())["bits"]["bpp"]


def test_segmentation_miou_matches_a_hand_count(tmp_path):
    labels = make_cityscapes(tmp_path / "cs")
    build(
        BuildOptions(
            codec="webp",
            out=tmp_path / "o",
            codec_options={"quality": 50},
            dataset="cityscapes",
            root=tmp_path / "cs",
            split="val",
            workers=1,
        )
    )
    result = evaluate(tmp_path / "o", "segmentation", "tests.task_models:road_everywhere")
    from lossyds.sources.cityscapes import train_ids

    targets = torch.cat([train_ids(torch.from_numpy(v)).flatten() for v in labels.values()])
    valid = targets[targets != 255]
    road_iou = float((valid == 0).sum()) / len(valid)  # prediction is road everywhere
    assert result["iou_per_class"][0] == pytest.approx(road_iou)
    present = len(torch.unique(valid))
    assert result["miou"] == pytest.approx(road_iou / present)


def test_oracle_separation_measures_what_the_codec_lost(tmp_path):
    build(BuildOptions(codec="flac", out=tmp_path / "flac", split="music", workers=1))
    build(BuildOptions(codec="opus", out=tmp_path / "opus", codec_options={"kbps": 6}, split="music", workers=1))
    lossless = evaluate(tmp_path / "flac", "separation")
    lossy = evaluate(tmp_path / "opus", "separation")
    assert set(lossless["sdr_per_stem"]) == {"drums", "bass", "other", "vocals"}
    assert math.isfinite(lossy["sdr"]) and lossless["sdr"] > lossy["sdr"] + 3
    # BSSEval v4 per stem is museval's, called directly on the same arrays (2 s windows, 1.5 s hop)
    import museval

    sample = next(iter(lossyds.open_dataset(tmp_path / "opus")))
    stems = {name: tensor.numpy() for name, tensor in sample["stems"].items()}
    estimates = oracle_irm(sample["audio"].numpy(), stems)
    names = list(stems)
    rate = sample["sample_rate"]
    direct = museval.evaluate(
        np.stack([stems[n].T for n in names]),
        np.stack([estimates[n].T for n in names]),
        win=2 * rate,
        hop=rate * 3 // 2,
    )
    recorded = next(s for s in lossy["samples"] if s["key"] == sample["key"])["bsseval_per_stem"]
    for i, name in enumerate(names):
        for metric, table in zip(("SDR", "ISR", "SIR", "SAR"), direct):
            assert recorded[name][metric] == pytest.approx(float(np.nanmedian(table[i])), abs=1e-6), (name, metric)
    assert lossless["bsseval"]["sdr"] > lossy["bsseval"]["sdr"]
    assert "BSSEval v4" in lossy["bsseval_note"]
    t = np.linspace(0, 1, 4000, dtype=np.float32)
    a, b = np.sin(2 * np.pi * 440 * t)[None], np.sin(2 * np.pi * 3000 * t)[None]
    estimates = oracle_irm(a + b, {"a": a, "b": b})
    assert sdr(a, estimates["a"]) > 15


def test_lossy_pretraining_example_pretrains_fine_tunes_and_learns(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "lossy_pretraining.py"
    result = subprocess.run(
        [sys.executable, str(script), "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for phase in (
        "pretrain lossy",
        "pretrain clean",
        "fine-tune after lossy",
        "fine-tune after clean",
        "fine-tune after scratch",
    ):
        assert re.search(rf"\[{phase}\] epoch \d+: .* bits/sample, [\d.]+ bpp", out), phase
    for start in ("lossy", "clean"):  # pretraining learned: its loss fell
        first, last = map(float, re.search(rf"\[pretrain {start}\] loss ([\d.]+) -> ([\d.]+)", out).groups())
        assert last < first
    lossy_bpp = float(re.search(r"\[pretrain lossy\] epoch 0: .*, ([\d.]+) bpp", out).group(1))
    clean_bpp = float(re.search(r"\[pretrain clean\] epoch 0: .*, ([\d.]+) bpp", out).group(1))
    assert lossy_bpp < clean_bpp / 5  # the lossy build fed far fewer bits
    chance = float(re.search(r"chance ([\d.]+)", out).group(1))
    lines = out.splitlines()
    table = {
        line.split()[0]: [float(v) for v in line.split()[1:]]
        for line in lines[lines.index("pretrained on   test clean   test lossy") + 1 :]
    }
    assert set(table) == {"lossy", "clean", "scratch"}
    assert table["clean"][0] > chance and table["lossy"][0] > chance  # above chance on the clean test set


def test_latent_classification_example_learns_from_latents_and_pixels_at_equal_bits(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "latent_classification.py"
    result = subprocess.run(
        [sys.executable, str(script), "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    fed = {
        kind: set(re.findall(rf"\[{kind}\] epoch \d+: .*, (\d+) bits/sample, ([\d.]+) bpp", out))
        for kind in ("latent", "pixels")
    }
    assert len(fed["latent"]) == 1 and fed["latent"] == fed["pixels"]  # the same bitstreams fed both
    for kind in ("latent", "pixels"):
        first, last = map(float, re.search(rf"\[{kind}\] loss ([\d.]+) -> ([\d.]+)", out).groups())
        assert last < first
    chance = float(re.search(r"chance ([\d.]+)", out).group(1))
    scores = dict(re.findall(r"^(latent|pixels) +([\d.]+)$", out, re.M))
    assert float(scores["latent"]) > chance and float(scores["pixels"]) > chance
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["codec"]["weights"]["source"] == "file"  # the codec trained in the run, not random weights


def _by_key(result):
    return sorted(result["samples"], key=lambda s: s["key"])


def test_parallel_evaluation_scores_the_same_samples_as_serial(tmp_path, speech_builds):
    build(BuildOptions(codec="jpeg", out=tmp_path / "jpg", codec_options={"quality": 5}, workers=1))
    serial = evaluate(tmp_path / "jpg", "classification", "tests.task_models:brightness_classifier", cores=0)
    threads = evaluate(tmp_path / "jpg", "classification", "tests.task_models:brightness_classifier", cores=2)
    assert serial["run"]["decode_threads"] == 0 and threads["run"]["decode_threads"] == 2  # images decode in threads
    assert _by_key(serial) == _by_key(threads) and serial["count"] == threads["count"] == 6
    assert serial["top1"] == pytest.approx(sum(s["correct"] for s in serial["samples"]) / 6)
    assert serial["top5"] == pytest.approx(sum(s["label"] in s["top5"] for s in serial["samples"]) / 6)

    speech = speech_builds["opus6"]
    serial = evaluate(speech, "asr", cores=0)
    processes = evaluate(speech, "asr", cores=2)
    assert (
        processes["run"]["decode_threads"] == 0 and processes["run"]["workers"] == 2
    )  # audio decodes in worker processes
    assert _by_key(serial) == _by_key(processes) and serial["wer"] == processes["wer"]


def test_evaluation_with_synthesis_on_a_decode_device(speech_builds, tmp_path):
    build_copy = shutil.copytree(
        speech_builds["encodec6"], tmp_path / "encodec6"
    )  # keeps the shared build's eval-asr.json pocketsphinx's
    plain = evaluate(build_copy, "asr", "tests.task_models:duration_words", cores=0)
    device = evaluate(build_copy, "asr", "tests.task_models:duration_words", cores=1, decode_device="cpu")
    assert device["run"]["decode_device"] == "cpu" and plain["run"]["decode_device"] is None
    assert [s["hypothesis"] for s in _by_key(device)] == [
        s["hypothesis"] for s in _by_key(plain)
    ]  # exact lengths, every sample
    assert device["num_evaluated"] == plain["num_evaluated"] == 5


def test_limited_evaluation_says_so_and_counts_its_own_bits(speech_builds, tmp_path):
    build_copy = shutil.copytree(speech_builds["opus6"], tmp_path / "opus6")
    calls = []
    result = evaluate(
        build_copy,
        "asr",
        "tests.task_models:duration_words",
        cores=0,
        limit=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 2), (2, 2)]
    assert result["limit"] == 2 and result["num_evaluated"] == 2 and result["num_samples"] == 5
    assert result["evaluated_bits_per_sample"] == pytest.approx(sum(s["payload_bits"] for s in result["samples"]) / 2)
    make_report([build_copy], tmp_path / "report")
    assert (
        "Partial evaluations: opus6: asr scored 2 of 5 samples (--limit)."
        in (tmp_path / "report" / "report.md").read_text()
    )
    with pytest.raises(UsageError, match="limit must be >= 1"):
        evaluate(build_copy, "asr", limit=0)


def test_eval_command_runs_in_parallel_and_refuses_a_missing_device(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    build(BuildOptions(codec="webp", out=tmp_path / "w", codec_options={"quality": 10}, workers=1))
    script = Path(sys.executable).with_name(
        "lossyds"
    )  # the console script, which does not put the current directory on sys.path
    command = [
        str(script) if script.exists() else sys.executable,
        *([] if script.exists() else ["-m", "lossyds.cli"]),
        "eval",
        str(tmp_path / "w"),
        "--task",
        "classification",
        "--model",
        "tests.task_models:brightness_classifier",
    ]
    repository = (
        Path(__file__).resolve().parents[1]
    )  # `tests.task_models` is found from here, as `python -m` would find it
    result = subprocess.run(
        [*command, "--cores", "2", "--limit", "4"], capture_output=True, text=True, timeout=300, cwd=repository
    )
    assert result.returncode == 0, result.stderr
    assert "4 of 6 samples" in result.stdout and "top1=" in result.stdout
    written = json.loads((tmp_path / "w" / "eval-classification.json").read_text())
    assert written["run"]["decode_threads"] == 2 and written["limit"] == 4 and len(written["samples"]) == 4
    if not torch.cuda.is_available():
        refused = subprocess.run(
            [*command, "--device", "cuda"], capture_output=True, text=True, timeout=300, cwd=repository
        )
        assert refused.returncode == 2 and "no CUDA device" in refused.stderr and "Traceback" not in refused.stderr


def test_report_correlates_each_samples_metric_with_its_own_outcome(speech_builds, tmp_path):
    import tarfile

    from scipy import stats

    for path in speech_builds.values():
        if not (path / "eval-asr.json").exists():
            evaluate(path, "asr")
    make_report(list(speech_builds.values()), tmp_path / "report")
    found = json.loads((tmp_path / "report" / "report.json").read_text())["per_sample_correlations"]
    pooled = {(c["quality_metric"], c["outcome"]): c for c in found if c["build"] == "all"}
    assert ("si-sdr", "wer") in pooled and pooled[("si-sdr", "wer")]["samples"] == 15  # 5 utterances x 3 builds
    # the same figure from the files directly: tarfile for each KEY.json, jiwer for each utterance
    xs, ys = [], []
    for path in speech_builds.values():
        outcomes = {
            s["key"]: jiwer.wer(s["reference"], s["hypothesis"])
            for s in json.loads((path / "eval-asr.json").read_text())["samples"]
        }
        for shard in json.loads((path / "manifest.json").read_text())["shards"]:
            with tarfile.open(path / shard["path"]) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        meta = json.loads(tar.extractfile(member).read())
                        xs.append(meta["metrics"]["si-sdr"])
                        ys.append(outcomes[member.name[: -len(".json")]])
    assert pooled[("si-sdr", "wer")]["spearman"] == pytest.approx(float(stats.spearmanr(xs, ys)[0]))
    assert "Per sample" in (tmp_path / "report" / "report.md").read_text()


def test_eval_and_verify_cover_the_whole_dataset_under_torchrun(speech_builds, tmp_path, monkeypatch):
    from lossyds.verify import verify

    build_copy = shutil.copytree(speech_builds["opus6"], tmp_path / "opus6")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert len(lossyds.open_dataset(build_copy)) < 5  # a training loader reads its rank's part
    assert evaluate(build_copy, "asr", "tests.task_models:duration_words", cores=0)["num_evaluated"] == 5
    assert verify(build_copy, decode=True, cores=0).decoded == 5
