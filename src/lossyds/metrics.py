"""Per-sample quality metrics: the decoded sample against its source, at the source rate and size.

One registry: name -> (modality, function). Images: uint8 arrays [H, W, C] in, audio:
float32 [channels, frames] in. Higher is better except `mel_distance` and `lpips`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


_lpips_model = None


def lpips(source: np.ndarray, decoded: np.ndarray) -> float:
    global _lpips_model
    if _lpips_model is None:
        try:
            import lpips as _lpips

            _lpips_model = _lpips.LPIPS(net="alex", verbose=False)
        except Exception as exc:  # the AlexNet backbone is a download
            raise UsageError(
                f"lpips needs the lpips package and its AlexNet backbone weights in torch hub's cache ({exc.__class__.__name__})."
            ) from exc
    to = lambda a: _to_nchw(a if a.shape[2] == 3 else np.repeat(a, 3, axis=2)) / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        return float(_lpips_model(to(source), to(decoded)))


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


IMAGE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": psnr,
    "ssim": ssim,
    "ms-ssim": ms_ssim,
    "lpips": lpips,
}
AUDIO_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "si-sdr": lambda s, d, r: si_sdr(s, d),
    "pesq": pesq_wb,
    "stoi": stoi,
    "mel-distance": mel_distance,
}


# The package each metric imports (module name, pip name); psnr and si-sdr need none.
METRIC_PACKAGES: dict[str, tuple[str, str]] = {
    "ssim": ("pytorch_msssim", "pytorch-msssim"),
    "ms-ssim": ("pytorch_msssim", "pytorch-msssim"),
    "lpips": ("lpips", "lpips"),
    "pesq": ("pesq", "pesq"),
    "stoi": ("pystoi", "pystoi"),
    "mel-distance": ("torchaudio", "torchaudio"),
}


def check_metrics(names: list[str], modality: str) -> list[str]:
    """Refuse, in one sentence and before any work, an unknown metric or one whose package is missing."""
    import importlib

    table = IMAGE_METRICS if modality == "image" else AUDIO_METRICS
    for name in names:
        if name not in table:
            raise UsageError(f"unknown {modality} metric {name!r}; choose from: {', '.join(table)}.")
        module, package = METRIC_PACKAGES.get(name, (None, None))
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            extra = "lossyds[neural]" if name == "lpips" else "lossyds[eval]"
            raise UsageError(
                f"metric {name} needs the {package} package, which is not installed: pip install '{extra}' (or {package})."
            ) from None
    if "lpips" in names:  # fail before the build starts, not in a worker
        lpips(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    return names


def compute(names: list[str], source: Any, decoded: torch.Tensor, sample_rate: int | None) -> dict[str, float]:
    """Metrics of one sample. `source`: the SourceSample's array; `decoded`: the codec's tensor."""
    if sample_rate is None:  # image: decoded [C, H, W] -> [H, W, C]
        array = decoded.permute(1, 2, 0).numpy()
        return {name: IMAGE_METRICS[name](source, array) for name in names}
    array = decoded.numpy()
    return {name: AUDIO_METRICS[name](source, array, sample_rate) for name in names}
