"""Image quality metrics: uint8 arrays [H, W, C] in, one float out (the records are in lossyds.metrics).

PSNR, SSIM and MS-SSIM, and the learned LPIPS and DISTS distances, whose networks load their
backbone from torch hub's cache and are kept once loaded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # imported where used: the CLI lists metrics without loading torch
    import numpy as np
    import torch


def psnr(source: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels (8-bit peak 255)."""
    import numpy as np

    mse = float(np.mean((source.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _to_nchw(image: np.ndarray) -> torch.Tensor:
    import torch

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
    import numpy as np
    import torch

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
    import torch
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
    import torch

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
    import numpy as np

    if image.shape[2] not in (1, 3):
        raise ValueError(f"dists takes grey or RGB images, not {image.shape[2]} channels")
    return _to_nchw(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) / 255.0


def dists(source: np.ndarray, decoded: np.ndarray) -> float:
    """DISTS distance (0 for identical images, higher is worse) at the images' own size: the
    package's network does not resize, and neither does this."""
    import torch

    global _dists_model
    if _dists_model is None:
        _dists_model = load_dists()
    with torch.no_grad():
        return float(_dists_model(_rgb01(source), _rgb01(decoded)))


def warm_lpips(net: str) -> Callable[[], float]:
    """A warm-up (`Metric.warm_up`) that loads LPIPS's `net` network and its backbone."""

    def warm() -> float:
        import numpy as np

        # 32 px: VGG's four poolings before its last LPIPS layer leave 2 px (8 px would leave none)
        return lpips(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8), net=net)

    return warm


def warm_dists() -> float:
    """`Metric.warm_up` of dists: loads its network once, before a build starts."""
    import numpy as np

    return dists(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


# piq's LPIPS weights file, in torch hub's cache under this name (piq downloads it from
# github.com/photosynthesis-team/photosynthesis.metrics/releases/download/v0.4.0/lpips_weights.pt).
PIQ_LPIPS_WEIGHTS = "lpips_weights.pt"
_piq_lpips_model: torch.nn.Module | None = None


def load_piq_lpips() -> torch.nn.Module:
    """piq 0.8's `LPIPS()` as its defaults build it (VGG-16, MSE distance, ImageNet mean and std),
    its two files read from torch hub's cache: torchvision's VGG-16 and piq's LPIPS weights. A
    missing file is one sentence naming it and where to put it; nothing is downloaded."""
    from .weights import torch_hub_checkpoints

    torchvision_backbone(LPIPS_BACKBONES["vgg"], "metric lpips-piq-db")
    weights = torch_hub_checkpoints() / PIQ_LPIPS_WEIGHTS
    if not weights.is_file():
        raise UsageError(
            f"metric lpips-piq-db needs piq's LPIPS weights: put {PIQ_LPIPS_WEIGHTS} (from github.com/photosynthesis-team/"
            f"photosynthesis.metrics/releases/download/v0.4.0/) at {weights}."
        )
    import warnings

    from piq import LPIPS

    with warnings.catch_warnings():  # piq asks torchvision for vgg16(pretrained=True), a deprecated spelling
        warnings.simplefilter("ignore", UserWarning)
        return LPIPS().eval()


def lpips_piq_db(source: np.ndarray, decoded: np.ndarray) -> float:
    """-10 log10 of piq's `LPIPS()` distance, in dB (higher is closer; inf for identical images),
    as the MPQ study computed and averaged it: the uint8 pixels handed over as floats 0..255
    although piq's LPIPS expects 0..1 (its ImageNet normalisation then sees values 255 times too
    large), a grey image as one channel (broadcast against the three-channel mean), and a
    decoded image whose channel count differs from the source's converted to grey
    (torchvision's `rgb_to_grayscale`). The standard LPIPS is `lpips`/`lpips-vgg`."""
    import torch
    from torchvision.transforms.functional import rgb_to_grayscale

    global _piq_lpips_model
    if _piq_lpips_model is None:
        _piq_lpips_model = load_piq_lpips()
    reference, distorted = _to_nchw(source), _to_nchw(decoded)
    if reference.shape[1] != distorted.shape[1]:
        distorted = rgb_to_grayscale(distorted)
    with torch.no_grad():
        distance = float(_piq_lpips_model(reference, distorted))
    return float("inf") if distance == 0 else -10 * math.log10(distance)


def warm_piq_lpips() -> float:
    """`Metric.warm_up` of lpips-piq-db: loads piq's network once, before a build starts."""
    import numpy as np

    return lpips_piq_db(np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 9, np.uint8))
