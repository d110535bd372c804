"""DISTS (`--metrics dists`), offline.

The real ImageNet VGG-16 file is not available here, so these tests make one: a VGG-16 with
random weights (torch.manual_seed(0)), saved under a temporary TORCH_HOME as
hub/checkpoints/vgg16-397923af.pth. The figures are therefore not DISTS's real scores; the
tests check the wiring (the package's network and its own trained alpha/beta, the input
scaling, the refusal without the file, the build's recorded values), not its calibration."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import lossyds
from lossyds import image_metrics, metrics
from lossyds.errors import UsageError
from lossyds.sources.folder import ImageFolderSource

from .test_cli import run
from .test_study_metrics import records


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Iterator[Path]:
    """A TORCH_HOME whose hub cache holds a random-weight VGG-16 under torchvision's file name
    (made once per module, all 138M parameters, and deleted after). Set for this module's tests only."""
    import torchvision

    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    backbone = checkpoints / image_metrics.DISTS_BACKBONE
    # Saved in the legacy (pre-zip) format: the real file dates from 2017, before torch 1.6's zip format.
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), backbone, _use_new_zipfile_serialization=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))  # inherited by the build subprocess too
        yield home
    backbone.unlink()  # pytest keeps its last temporary folders; this file need not stay


@pytest.fixture
def fresh(monkeypatch, torch_home) -> Path:
    """No DISTS network cached from an earlier test; TORCH_HOME as above. -> the backbone file."""
    monkeypatch.setattr(image_metrics, "_dists_model", None)
    return torch_home / "hub" / "checkpoints" / image_metrics.DISTS_BACKBONE


def natural_image(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: smooth colour gradients plus a sinusoidal texture and mild grain."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    texture = 20 * np.sin(2 * np.pi * 9 * x) * np.cos(2 * np.pi * 6 * y)
    grain = np.random.default_rng(seed).normal(0, 3, (height, width, 3))
    base = np.stack([200 * x + 30, 180 * y + 40, 120 * (1 - x) * y + 60], axis=2)
    return np.clip(base + texture[:, :, None] + grain, 0, 255).round().astype(np.uint8)


def noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    """`image` plus Gaussian noise of `sigma` grey levels (the same noise pattern at every sigma)."""
    noise = np.random.default_rng(seed).standard_normal(image.shape)
    return np.clip(image + sigma * noise, 0, 255).round().astype(np.uint8)


def by_hand(backbone: Path, source: np.ndarray, decoded: np.ndarray, monkeypatch) -> float:
    """DISTS_pytorch's own DISTS network, given the VGG-16 from `backbone`, on [0, 1] tensors
    made here; alpha/beta as the package loads them (sys.prefix/weights.pt) where that copy exists."""
    import torchvision
    from DISTS_pytorch import DISTS_pt

    vgg = torchvision.models.vgg16(weights=None)
    vgg.load_state_dict(torch.load(backbone, weights_only=True))
    monkeypatch.setattr(DISTS_pt, "models", SimpleNamespace(vgg16=lambda pretrained: vgg))
    own_copy = os.path.isfile(os.path.join(sys.prefix, "weights.pt"))
    network = DISTS_pt.DISTS(load_weights=own_copy)
    if not own_copy:
        shipped = torch.load(Path(DISTS_pt.__file__).parent / "weights.pt", weights_only=True)
        network.alpha.data, network.beta.data = shipped["alpha"], shipped["beta"]
    to = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
    return float(network(to(source), to(decoded)).detach())


def test_identical_images_are_at_distance_zero(fresh):
    image = natural_image()
    assert abs(image_metrics.dists(image, image)) < 1e-6
    assert image_metrics.dists(image, noisy(image, 10)) > 1e-3


def test_distance_grows_with_noise(fresh):
    image = natural_image()
    distances = [image_metrics.dists(image, noisy(image, sigma)) for sigma in (2, 8, 24, 64)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_matches_the_packages_network_computed_by_hand(fresh, monkeypatch):
    image = natural_image()
    decoded = noisy(image, 16)
    expected = by_hand(fresh, image, decoded, monkeypatch)
    assert image_metrics.dists(image, decoded) == pytest.approx(expected, abs=1e-5)
    assert expected > 1e-3  # a real difference, not two zeros


def test_uses_the_packages_trained_alpha_and_beta(fresh):
    from DISTS_pytorch import DISTS_pt

    shipped = torch.load(Path(DISTS_pt.__file__).parent / "weights.pt", weights_only=True)
    network = image_metrics.load_dists()
    assert network.alpha.shape == network.beta.shape == (1, image_metrics.DISTS_CHANNELS, 1, 1)
    assert torch.equal(network.alpha, shipped["alpha"]) and torch.equal(network.beta, shipped["beta"])
    assert not any(p.requires_grad for p in network.parameters())


def test_grey_images_are_repeated_to_three_channels(fresh):
    grey = natural_image()[:, :, 1:2]  # [H, W, 1]
    decoded = noisy(grey, 16)
    distance = image_metrics.dists(grey, decoded)
    assert distance > 1e-3
    assert distance == pytest.approx(image_metrics.dists(np.repeat(grey, 3, 2), np.repeat(decoded, 3, 2)), abs=1e-7)


def test_without_the_backbone_check_metrics_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    monkeypatch.setattr(image_metrics, "_dists_model", None)
    checkpoints = tmp_path / "hub" / "checkpoints"
    with pytest.raises(UsageError, match=r"vgg16-397923af\.pth .* at " + str(checkpoints)) as refused:
        metrics.check_metrics(["psnr", "dists"], "image")
    message = str(refused.value)
    assert "\n" not in message and message.endswith(".") and ". " not in message  # one sentence
    assert image_metrics._dists_model is None
    assert not checkpoints.exists()  # nothing was downloaded


def make_folder(root: Path) -> Path:
    """ROOT/train/{colour,grey}/*.png: two small RGB images and one grey one."""
    for name, image in (
        ("colour/a.png", natural_image(48, 64, seed=1)),
        ("colour/b.png", natural_image(56, 40, seed=2)[::-1]),
        ("grey/c.png", natural_image(40, 48, seed=3)[:, :, 0]),
    ):
        (root / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(root / "train" / name)
    return root


def test_build_records_dists_of_each_decoded_sample(fresh, tmp_path):
    root = make_folder(tmp_path / "src")
    out = tmp_path / "out"
    result = run(
        "build",
        *("--codec", "jpeg", "--quality", "10", "--metrics", "dists"),
        *("--dataset", "imagefolder", "--root", str(root), "--split", "train", "--workers", "1", "--out", str(out)),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "manifest.json").read_text())["metrics"]["dists"]
    recorded = {key: meta["metrics"]["dists"] for key, meta in records(out).items()}
    assert summary["count"] == len(recorded) == 3
    assert summary["mean"] == pytest.approx(np.mean(list(recorded.values())), rel=1e-6)
    source = ImageFolderSource(root=root, split="train", modality="image")
    sources = {ref.key: source.load(ref).image for ref in source.refs()}
    decoded = {s["key"]: s["image"].permute(1, 2, 0).numpy() for s in lossyds.open_dataset(out)}
    assert sorted(sources) == sorted(decoded) == sorted(recorded)
    assert {image.shape[2] for image in sources.values()} == {1, 3}
    for key, value in recorded.items():
        assert value > 1e-3, key  # JPEG at quality 10 is visibly lossy
        assert image_metrics.dists(sources[key], decoded[key]) == pytest.approx(value, abs=1e-5), key
