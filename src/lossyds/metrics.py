"""Per-sample quality metrics: the decoded sample against its source, at the source rate and size.

One registry: name -> (modality, function). Images: uint8 arrays [H, W, C] in, audio:
float32 [channels, frames] in. Higher is better except the distances `mel-distance`, `lpips`, `lpips-vgg`, `dists` and `cdpam`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .errors import UsageError


def psnr(source: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels (8-bit peak 255)."""
    mse = float(np.mean((source.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _to_nchw(image: np.ndarray) -> torch.Tensor:
    return torch.tensor(image).permute(2, 0, 1)[None].float()  # a copy: source arrays may be read-only


def ssim(source: np.ndarray, decoded: np.ndarray) -> float:
    from pytorch_msssim import ssim as _ssim

    return float(_ssim(_to_nchw(source), _to_nchw(decoded), data_range=255))


def ms_ssim(source: np.ndarray, decoded: np.ndarray) -> float:
    from pytorch_msssim import ms_ssim as _ms_ssim

    if min(source.shape[:2]) <= 160:  # five scales of an 11-px window need > 160 px
        return float("nan")
    return float(_ms_ssim(_to_nchw(source), _to_nchw(decoded), data_range=255))


# torchvision's backbone file each LPIPS network loads from torch hub's cache (a download).
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_lpips_models: dict[str, Any] = {}


def torchvision_backbone(filename: str, metric: str) -> Path:
    """The torchvision backbone file `metric` needs, in torch hub's cache; a missing one is one
    sentence naming the file and where to put it."""
    from .weights import torch_hub_checkpoints

    path = torch_hub_checkpoints() / filename
    if not path.is_file():
        raise UsageError(
            f"{metric} needs torchvision's backbone weights: put {filename} (from download.pytorch.org/models) at {path}."
        )
    return path


def lpips(source: np.ndarray, decoded: np.ndarray, net: str = "alex") -> float:
    """LPIPS distance (Zhang et al. 2018, the lpips package's v0.1 linear layers) with the
    AlexNet or VGG-16 backbone; inputs scaled to [-1, 1], grey images repeated to three channels."""
    if net not in _lpips_models:
        torchvision_backbone(LPIPS_BACKBONES[net], "lpips" if net == "alex" else f"lpips-{net}")
        import lpips as _lpips

        _lpips_models[net] = _lpips.LPIPS(net=net, verbose=False)
    to = lambda a: _to_nchw(a if a.shape[2] == 3 else np.repeat(a, 3, axis=2)) / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        return float(_lpips_models[net](to(source), to(decoded)))


# DISTS's backbone: torchvision's ImageNet VGG-16, the same file lpips-vgg loads.
DISTS_BACKBONE = LPIPS_BACKBONES["vgg"]
DISTS_CHANNELS = 3 + 64 + 128 + 256 + 512 + 512  # the input and its five VGG stages, one alpha and beta each
_dists_model: torch.nn.Module | None = None
_dists_lock = threading.Lock()  # loading patches a module global of DISTS_pytorch for a moment


def _dists_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The package's trained alpha and beta, each [1, 1475, 1, 1], from DISTS_pytorch/weights.pt.

    The package's own `load_weights` reads sys.prefix/weights.pt, a copy its wheel puts beside
    the interpreter; the one inside the package is read here instead, as plain tensors."""
    from DISTS_pytorch import DISTS_pt

    path = Path(DISTS_pt.__file__).parent / "weights.pt"
    if not path.is_file():
        raise UsageError(
            f"metric dists needs its weights at {path}: reinstall DISTS_pytorch (pip install dists-pytorch)."
        )
    weights = torch.load(path, map_location="cpu", weights_only=True)
    expected = (1, DISTS_CHANNELS, 1, 1)
    for name in ("alpha", "beta"):
        if tuple(getattr(weights.get(name), "shape", ())) != expected or network.get_parameter(name).shape != expected:
            raise UsageError(f"{path} is not DISTS_pytorch 0.1's weights ({name} is not {expected}): reinstall it.")
    return weights


def load_dists() -> torch.nn.Module:
    """DISTS's network (Ding et al. 2020) on the CPU: VGG-16 read from torch hub's cache, alpha
    and beta from the DISTS_pytorch package. Nothing is downloaded."""
    backbone = torchvision_backbone(DISTS_BACKBONE, "metric dists")
    import torchvision
    from DISTS_pytorch import DISTS_pt

    with torch.device("meta"):  # no random init of 138M parameters that the file replaces at once
        vgg = torchvision.models.vgg16(weights=None)
    vgg.load_state_dict(torch.load(backbone, map_location="cpu", weights_only=True), assign=True)
    # DISTS.__init__ calls models.vgg16(pretrained=True), a download: for the moment it runs, the
    # package's `models` is a namespace whose vgg16 returns this VGG.
    with _dists_lock:
        package_models, DISTS_pt.models = DISTS_pt.models, SimpleNamespace(vgg16=lambda **_: vgg)
        try:
            network = DISTS_pt.DISTS(load_weights=False)
        finally:
            DISTS_pt.models = package_models
    weights = _dists_weights(network)
    network.alpha.data = weights["alpha"].float()
    network.beta.data = weights["beta"].float()
    return network.requires_grad_(False).eval()


def _rgb01(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 1 or 3] -> float [1, 3, H, W] in [0, 1], DISTS's input range; grey repeated."""
    if image.shape[2] not in (1, 3):
        raise ValueError(f"dists takes grey or RGB images, not {image.shape[2]} channels")
    return _to_nchw(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) / 255.0


def dists(source: np.ndarray, decoded: np.ndarray) -> float:
    """DISTS distance (0 for identical images, higher is worse) at the images' own size: the
    package's network does not resize, and neither does this."""
    global _dists_model
    if _dists_model is None:
        _dists_model = load_dists()
    with torch.no_grad():
        return float(_dists_model(_rgb01(source), _rgb01(decoded)))


def si_sdr(source: np.ndarray, decoded: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), averaged over channels.

    Written here: a three-line formula, not worth a dependency."""
    values = []
    for reference, estimate in zip(source.astype(np.float64), decoded.astype(np.float64)):
        reference = reference - reference.mean()
        estimate = estimate - estimate.mean()
        scale = np.dot(estimate, reference) / (np.dot(reference, reference) + 1e-12)
        target = scale * reference
        values.append(
            10 * math.log10((np.dot(target, target) + 1e-12) / (np.dot(estimate - target, estimate - target) + 1e-12))
        )
    return float(np.mean(values))


def _mono16k(audio: np.ndarray, rate: int) -> np.ndarray:
    from .codecs._audio import resample

    return resample(audio.mean(axis=0, keepdims=True).astype(np.float32), rate, 16000)[0]


def pesq_wb(source: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    from pesq import PesqError
    from pesq import pesq as _pesq

    try:
        return float(_pesq(16000, _mono16k(source, rate), _mono16k(decoded, rate), "wb"))
    except PesqError:
        return float("nan")  # e.g. no speech found


def stoi(source: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(_mono16k(source, rate), _mono16k(decoded, rate), 16000, extended=False))


def mel_distance(source: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """Mean absolute difference of log-mel spectrograms (64 bands, 25 ms / 10 ms), in nepers."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=rate, n_fft=int(0.025 * rate), hop_length=int(0.010 * rate), n_mels=64
    )
    a = torch.log(mel(torch.from_numpy(np.ascontiguousarray(source))) + 1e-5)
    b = torch.log(mel(torch.from_numpy(np.ascontiguousarray(decoded))) + 1e-5)
    return float((a - b).abs().mean())


def audio_psnr(source: np.ndarray, decoded: np.ndarray) -> float:
    """Waveform PSNR in dB against full scale (peak 1.0 for float audio in [-1, 1]), over all
    channels and frames: -10 log10(MSE), as the reference study computes it."""
    mse = float(np.mean((source.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10 * math.log10(mse)


# cdpam 0.0.6's trained checkpoint, the one file this module agrees to unpickle.
CDPAM_CHECKPOINT = "CDPAM_trained/scratchJNDdefault_best_model.pth"
CDPAM_SHA256 = "453c8b6edee1a94f0120236156436ff28fe4d8d884485e4a67695c8e8570bdfe"
CDPAM_RATE = 22050  # Hz: the rate CDPAM is trained at
_cdpam_model = None


def cdpam_checkpoint() -> Path:
    spec = importlib.util.find_spec("cdpam")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("metric cdpam needs the cdpam package (which ships its weights): pip install cdpam.")
    return Path(next(iter(spec.submodule_search_locations))) / CDPAM_CHECKPOINT


def load_cdpam(checkpoint: Path | None = None) -> torch.nn.Module:
    """CDPAM's network (Manocha et al. 2021) with the cdpam package's trained weights, on the CPU.

    The checkpoint is a legacy pickle, which `torch.load(weights_only=True)` cannot read, so
    its sha256 is checked first and any other file is refused. The package's __init__ imports
    librosa and resampy for file loading lossyds does not use, so only its models.py is loaded."""
    checkpoint = checkpoint or cdpam_checkpoint()
    if not checkpoint.is_file():
        raise UsageError(f"metric cdpam needs its weights at {checkpoint}: reinstall cdpam (pip install cdpam==0.0.6).")
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    if digest != CDPAM_SHA256:
        raise UsageError(
            f"{checkpoint} is not cdpam 0.0.6's checkpoint (sha256 {digest[:12]}..., expected "
            f"{CDPAM_SHA256[:12]}...): refusing to unpickle it; reinstall cdpam==0.0.6."
        )
    spec = importlib.util.spec_from_file_location("lossyds_cdpam_models", checkpoint.parent.parent / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The hyperparameters cdpam.CDPAM builds its trained network with.
    model = module.FINnet(
        dev=torch.device("cpu"),
        encoder_layers=16,
        encoder_filters=64,
        ndim=[16, 6],
        classif_dp=0.05,
        classif_BN=0,
        classif_act="no",
        input_size=512,
    )
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state"])
    return model.eval()


def cdpam(source: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """CDPAM distance (lower is closer), averaged over channels: each channel resampled to
    22.05 kHz and scaled to int16 range, the input the package's `load_audio` gives its model."""
    global _cdpam_model
    if _cdpam_model is None:
        _cdpam_model = load_cdpam()
    from .codecs._audio import resample

    def prepare(audio: np.ndarray) -> torch.Tensor:
        audio = resample(audio.astype(np.float32), rate, CDPAM_RATE) if rate != CDPAM_RATE else audio
        return torch.from_numpy(np.round(audio.astype(np.float32) * 32768)).unsqueeze(1)  # [channels, 1, frames]

    with torch.no_grad():
        encoder = _cdpam_model.base_encoder
        a = torch.nn.functional.normalize(encoder(prepare(source))[1], dim=1)
        b = torch.nn.functional.normalize(encoder(prepare(decoded))[1], dim=1)
        return float(_cdpam_model.model_dist(a, b).mean())


IMAGE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": psnr,
    "ssim": ssim,
    "ms-ssim": ms_ssim,
    "lpips": lpips,
    "lpips-vgg": lambda s, d: lpips(s, d, net="vgg"),
    "dists": dists,
}
AUDIO_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "si-sdr": lambda s, d, r: si_sdr(s, d),
    "pesq": pesq_wb,
    "stoi": stoi,
    "mel-distance": mel_distance,
    "psnr": lambda s, d, r: audio_psnr(s, d),
    "cdpam": cdpam,
}


# The package each metric imports (module name, pip name); psnr and si-sdr need none.
METRIC_PACKAGES: dict[str, tuple[str, str]] = {
    "ssim": ("pytorch_msssim", "pytorch-msssim"),
    "ms-ssim": ("pytorch_msssim", "pytorch-msssim"),
    "lpips": ("lpips", "lpips"),
    "lpips-vgg": ("lpips", "lpips"),
    "dists": ("DISTS_pytorch", "dists-pytorch"),
    "cdpam": ("cdpam", "cdpam"),
    "pesq": ("pesq", "pesq"),
    "stoi": ("pystoi", "pystoi"),
    "mel-distance": ("torchaudio", "torchaudio"),
}


def check_metrics(names: list[str], modality: str) -> list[str]:
    """Refuse, in one sentence and before any work, an unknown metric or one whose package is missing."""

    table = IMAGE_METRICS if modality == "image" else AUDIO_METRICS
    for name in names:
        if name not in table:
            raise UsageError(f"unknown {modality} metric {name!r}; choose from: {', '.join(table)}.")
        module, package = METRIC_PACKAGES.get(name, (None, None))
        if module is None:
            continue
        if importlib.util.find_spec(module) is None:
            extra = "lossyds[neural]" if name.startswith("lpips") else "lossyds[eval]"
            raise UsageError(
                f"metric {name} needs the {package} package, which is not installed: pip install '{extra}' (or {package})."
            ) from None
    # Weights are checked before the build starts, not in a worker.
    for name, net in (("lpips", "alex"), ("lpips-vgg", "vgg")):
        if name in names and modality == "image":
            lpips(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), net=net)
    if "dists" in names and modality == "image":
        dists(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    if "cdpam" in names and modality == "audio":
        cdpam(np.zeros((1, 4096), np.float32), np.zeros((1, 4096), np.float32), CDPAM_RATE)
    return names


def compute(names: list[str], source: Any, decoded: torch.Tensor, sample_rate: int | None) -> dict[str, float]:
    """Metrics of one sample. `source`: the SourceSample's array; `decoded`: the codec's tensor."""
    if sample_rate is None:  # image: decoded [C, H, W] -> [H, W, C]
        array = decoded.permute(1, 2, 0).numpy()
        return {name: IMAGE_METRICS[name](source, array) for name in names}
    array = decoded.numpy()
    return {name: AUDIO_METRICS[name](source, array, sample_rate) for name in names}
