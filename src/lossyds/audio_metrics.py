"""Audio quality metrics: float32 arrays [channels, frames] and the sample rate in, one float out
(the records are in lossyds.metrics).

SI-SDR, PESQ, STOI, log-mel distance and waveform PSNR, and CDPAM, whose network loads the
cdpam package's checkpoint (sha256-checked) and is kept once loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:  # imported where used: the CLI lists metrics without loading torch
    import numpy as np
    import torch


def si_sdr(source: np.ndarray, decoded: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), averaged over channels.

    Written here: a three-line formula, not worth a dependency."""
    import numpy as np

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
    import numpy as np

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
    import numpy as np
    import torch
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
    import numpy as np

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
    import torch

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
    import numpy as np
    import torch

    from .codecs._audio import resample

    def prepare(audio: np.ndarray) -> torch.Tensor:
        audio = resample(audio.astype(np.float32), rate, CDPAM_RATE) if rate != CDPAM_RATE else audio
        return torch.from_numpy(np.round(audio.astype(np.float32) * 32768)).unsqueeze(1)  # [channels, 1, frames]

    return _cdpam_distance(prepare(source), prepare(decoded))


def _cdpam_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """CDPAM's distance of two [channels, 1, frames] inputs, averaged over channels (what the
    package's `CDPAM.forward` computes per channel)."""
    import torch

    global _cdpam_model
    if _cdpam_model is None:
        _cdpam_model = load_cdpam()
    with torch.no_grad():
        encoder = _cdpam_model.base_encoder
        a = torch.nn.functional.normalize(encoder(a)[1], dim=1)
        b = torch.nn.functional.normalize(encoder(b)[1], dim=1)
        return float(_cdpam_model.model_dist(a, b).mean())


def cdpam_raw(source: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """CDPAM distance on the waveforms as they are, as the MPQ study called the package
    (`cdpam.CDPAM().forward(reference, distorted)` on float tensors): at the source rate (48 or
    44.1 kHz, not the 22.05 kHz CDPAM is trained at) and in [-1, 1] (not the int16 range its
    own loader gives), averaged over channels. The standard input is `cdpam`'s."""
    import numpy as np
    import torch

    def prepare(audio: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(1)

    return _cdpam_distance(prepare(source), prepare(decoded))


def waveform_mse(source: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared difference of the waveforms over all channels and frames (full scale 1.0),
    as torch's MSELoss gives it; `-10 log10` of its mean over a build is the MPQ study's audio
    PSNR (see `Metric.db_of_mean`)."""
    import numpy as np

    return float(np.mean((source.astype(np.float64) - decoded.astype(np.float64)) ** 2))


def warm_cdpam() -> float:
    """`Metric.warm_up` of cdpam: loads its network once, before a build starts."""
    import numpy as np

    return cdpam(np.zeros((1, 4096), np.float32), np.zeros((1, 4096), np.float32), CDPAM_RATE)
