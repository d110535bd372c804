"""The reference study's perceptual metrics: CDPAM with the cdpam package's real weights, waveform
PSNR, and LPIPS with the VGG backbone (refused, naming the file, while its weights are absent)."""

from __future__ import annotations

import json
import math
import shutil
import tarfile

import numpy as np
import pytest

import lossyds
from lossyds import audio_metrics, image_metrics, metrics
from lossyds.errors import UsageError

from .test_cli import run


def records(directory) -> dict[str, dict]:
    """KEY -> the record's KEY.json, read from the tar files directly."""
    found = {}
    for shard in json.loads((directory / "manifest.json").read_text())["shards"]:
        with tarfile.open(directory / shard["path"]) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    found[member.name[: -len(".json")]] = json.loads(tar.extractfile(member).read())
    return found


def test_cdpam_grows_as_the_opus_rate_falls_and_psnr_falls(tmp_path):
    built = {}
    for kbps in ("6", "32"):  # two utterances each: CDPAM takes seconds per utterance on a CPU
        out = tmp_path / f"opus{kbps}"
        result = run(
            "build", "--codec", "opus", "--kbps", kbps, "--metrics", "cdpam,psnr", "--limit", "2", "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
        built[kbps] = records(out)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["metrics"]["cdpam"]["count"] == len(built[kbps]) == 2
    for kbps, found in built.items():
        assert all(meta["metrics"]["cdpam"] > 0 for meta in found.values()), kbps
    cdpam = {kbps: np.mean([m["metrics"]["cdpam"] for m in found.values()]) for kbps, found in built.items()}
    assert cdpam["6"] > cdpam["32"]
    psnr = {kbps: np.mean([m["metrics"]["psnr"] for m in found.values()]) for kbps, found in built.items()}
    assert psnr["32"] > psnr["6"]
    # each recorded figure is the metric of the decoded sample against its lossless source
    lossless = run("build", "--codec", "flac", "--limit", "2", "--out", str(tmp_path / "flac"))
    assert lossless.returncode == 0, lossless.stderr
    sources = {s["key"]: s["audio"].numpy() for s in lossyds.open_dataset(tmp_path / "flac")}
    sample = next(iter(lossyds.open_dataset(tmp_path / "opus6")))
    decoded = sample["audio"].numpy()
    recorded = built["6"][sample["key"]]["metrics"]
    assert audio_metrics.audio_psnr(sources[sample["key"]], decoded) == pytest.approx(recorded["psnr"], abs=1e-6)
    assert audio_metrics.cdpam(sources[sample["key"]], decoded, sample["sample_rate"]) == pytest.approx(
        recorded["cdpam"], rel=1e-4
    )


def test_cdpam_refuses_any_checkpoint_but_the_packages_own(tmp_path):
    shipped = audio_metrics.cdpam_checkpoint()
    package = tmp_path / "cdpam"
    (package / "CDPAM_trained").mkdir(parents=True)
    shutil.copy(shipped.parent.parent / "models.py", package / "models.py")
    altered = package / audio_metrics.CDPAM_CHECKPOINT
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 1
    altered.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="refusing to unpickle"):
        audio_metrics.load_cdpam(altered)
    with pytest.raises(UsageError, match="needs its weights at"):
        audio_metrics.load_cdpam(package / "CDPAM_trained" / "absent.pth")


def test_audio_psnr_is_against_full_scale():
    rng = np.random.default_rng(0)
    source = rng.uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
    decoded = source + np.float32(0.01) * np.sign(rng.standard_normal(source.shape)).astype(np.float32)
    assert audio_metrics.audio_psnr(source, decoded) == pytest.approx(40.0, abs=1e-3)  # MSE 1e-4 of peak 1
    assert math.isinf(audio_metrics.audio_psnr(source, source))


def test_lpips_vgg_without_its_backbone_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache, here and in the subprocess
    monkeypatch.setattr(image_metrics, "_lpips_models", {})
    with pytest.raises(UsageError, match=r"vgg16-397923af\.pth .* at " + str(tmp_path / "hub" / "checkpoints")):
        metrics.check_metrics(["psnr", "lpips-vgg"], "image")
    result = run("build", "--codec", "jpeg", "--quality", "20", "--metrics", "lpips-vgg", "--out", str(tmp_path / "o"))
    assert result.returncode != 0 and "vgg16-397923af.pth" in result.stderr
    assert not (tmp_path / "o" / "manifest.json").exists()
