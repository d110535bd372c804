"""Per-sample quality metrics: the decoded sample against its source, at the source rate and size.

One record per metric (`Metric`, in `METRICS`): its name, modality, function, direction, unit,
how its inputs are scaled, the package and lossyds extra it needs, and its warm-up. Images:
uint8 arrays [H, W, C] in, audio: float32 [channels, frames] in. `build --metrics`, its help,
the availability check and `lossyds report` all read the records. The functions themselves are
in lossyds.image_metrics and lossyds.audio_metrics.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .audio_metrics import audio_psnr, cdpam, cdpam_raw, mel_distance, pesq_wb, si_sdr, stoi, warm_cdpam, waveform_mse
from .errors import UsageError
from .image_metrics import dists, lpips, lpips_piq_db, ms_ssim, psnr, ssim, warm_dists, warm_lpips, warm_piq_lpips

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Metric:
    """One quality metric: everything lossyds knows about it, in one place.

    `function(source, decoded)` for images (uint8 [H, W, C]) or `(source, decoded, rate)` for
    audio (float32 [channels, frames]); `package` the (module, pip name) it imports, None for
    none; `extra` the lossyds extra that installs it; `scaling` how the inputs reach the
    function it wraps; `warm_up` loads its weights once, before a build starts, so that a
    missing file stops the build in one sentence instead of failing in a worker. A build's
    summary of a metric is the mean of its finite per-sample values; `db_of_mean` adds
    `-10 log10` of that mean, in dB, beside it (the manifest's `db_of_mean`)."""

    name: str
    modality: str
    function: Callable[..., float]
    higher_is_better: bool
    unit: str
    scaling: str
    package: tuple[str, str] | None = None
    extra: str = "eval"
    warm_up: Callable[[], Any] | None = None
    db_of_mean: bool = False

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


_MSSSIM = ("pytorch_msssim", "pytorch-msssim")
_GREY_TO_RGB = "grey repeated to three channels"
METRICS: tuple[Metric, ...] = (
    Metric("psnr", "image", psnr, True, "dB", "uint8 pixels, peak 255, over all channels"),
    Metric("ssim", "image", ssim, True, "index (1: identical)", "uint8 pixels as floats, data range 255", _MSSSIM),
    Metric("ms-ssim", "image", ms_ssim, True, "index (1: identical)", "as ssim; NaN at 160 px or less", _MSSSIM),
    Metric(
        "lpips",
        "image",
        lpips,
        False,
        "distance",
        f"pixels to [-1, 1], {_GREY_TO_RGB}",
        ("lpips", "lpips"),
        "neural",
        warm_lpips("alex"),
    ),
    Metric(
        "lpips-vgg",
        "image",
        lambda s, d: lpips(s, d, net="vgg"),
        False,
        "distance",
        f"pixels to [-1, 1], {_GREY_TO_RGB}",
        ("lpips", "lpips"),
        "neural",
        warm_lpips("vgg"),
    ),
    Metric(
        "dists",
        "image",
        dists,
        False,
        "distance (0: identical)",
        f"pixels to [0, 1], {_GREY_TO_RGB}",
        ("DISTS_pytorch", "dists-pytorch"),
        "eval",
        warm_dists,
    ),
    Metric(
        "lpips-piq-db",
        "image",
        lpips_piq_db,
        True,
        "dB (-10 log10 of the distance)",
        "uint8 pixels as floats 0..255 (piq expects 0..1), grey as one channel, as the MPQ study ran piq",
        ("piq", "piq"),
        "eval",
        warm_piq_lpips,
    ),
    Metric("si-sdr", "audio", lambda s, d, r: si_sdr(s, d), True, "dB", "waveforms, mean removed per channel"),
    Metric("pesq", "audio", pesq_wb, True, "MOS-LQO (wide band)", "mono at 16 kHz", ("pesq", "pesq")),
    Metric("stoi", "audio", stoi, True, "index 0..1", "mono at 16 kHz", ("pystoi", "pystoi")),
    Metric(
        "mel-distance",
        "audio",
        mel_distance,
        False,
        "nepers",
        "64-band log-mel, 25 ms windows every 10 ms",
        ("torchaudio", "torchaudio"),
    ),
    Metric("psnr", "audio", lambda s, d, r: audio_psnr(s, d), True, "dB", "waveforms, peak 1.0 (full scale)"),
    Metric(
        "cdpam",
        "audio",
        cdpam,
        False,
        "distance",
        "each channel at 22.05 kHz in int16 range",
        ("cdpam", "cdpam"),
        "eval",
        warm_cdpam,
    ),
    Metric(
        "cdpam-raw",
        "audio",
        cdpam_raw,
        False,
        "distance",
        "waveforms at the source rate in [-1, 1], as the MPQ study called the package",
        ("cdpam", "cdpam"),
        "eval",
        warm_cdpam,
        db_of_mean=True,
    ),
    Metric(
        "mse",
        "audio",
        lambda s, d, r: waveform_mse(s, d),
        False,
        "squared full scale",
        "waveforms, over all channels and frames",
        db_of_mean=True,
    ),
)


def metrics_of(modality: str) -> dict[str, Metric]:
    """name -> record of every metric of `modality`, in declaration order."""
    return {metric.name: metric for metric in METRICS if metric.modality == modality}


def find(name: str, modality: str | None = None) -> Metric | None:
    """The record of metric `name` (of `modality`, or the first of that name); a chunked audio
    name (`NAME@CHUNKSxFRAMES`, see `chunking`) finds NAME's audio record."""
    found = next((m for m in METRICS if m.name == name and modality in (None, m.modality)), None)
    if found is None and "@" in name and modality in (None, "audio"):
        found = find(name.partition("@")[0], "audio")
    return found


def chunking(name: str) -> tuple[str, int, int] | None:
    """(metric, chunks, frames) of an audio metric named `NAME@CHUNKSxFRAMES`, e.g.
    `cdpam-raw@50x100000`: the metric on each of the first CHUNKS consecutive pieces of FRAMES
    frames per channel (a shorter last piece as it is, none past the end), averaged over them,
    as the MPQ study measured MUSDB (50 chunks of 100,000 samples). None for a plain name; a
    malformed suffix is refused in one sentence."""
    if "@" not in name:
        return None
    base, _, spec = name.partition("@")
    chunks, _, frames = spec.partition("x")
    if not (chunks.isdigit() and frames.isdigit() and int(chunks) > 0 and int(frames) > 0):
        raise UsageError(f"metric {name!r}: write a chunked audio metric as NAME@CHUNKSxFRAMES, e.g. {base}@50x100000.")
    return base, int(chunks), int(frames)


def summaries(name: str, mean: float | None) -> dict[str, float | None]:
    """What a build records beside metric `name`'s mean: `db_of_mean` (-10 log10 of the mean,
    in dB) for the metrics that declare it; nothing for the others."""
    metric = find(name)
    if metric is None or not metric.db_of_mean:
        return {}
    if mean is None:
        return {"db_of_mean": None}
    return {"db_of_mean": float("inf") if mean == 0 else -10 * math.log10(mean)}


def help_text() -> str:
    """The metric names per modality, for `build --metrics`'s help."""
    return "; ".join(
        f"{label}: {','.join(metrics_of(modality))}" for modality, label in (("image", "images"), ("audio", "audio"))
    )


IMAGE_METRICS: dict[str, Callable[..., float]] = {name: m.function for name, m in metrics_of("image").items()}
AUDIO_METRICS: dict[str, Callable[..., float]] = {name: m.function for name, m in metrics_of("audio").items()}


def check_metrics(names: list[str], modality: str) -> list[str]:
    """Refuse, in one sentence and before any work, an unknown metric or one whose package is
    missing; then load the weights of those that have any (`Metric.warm_up`)."""
    table = metrics_of(modality)
    for name in names:
        chunked = chunking(name) if modality == "audio" else None
        if (chunked[0] if chunked else name) not in table:
            raise UsageError(f"unknown {modality} metric {name!r}; choose from: {', '.join(table)}.")
        metric = table[chunked[0] if chunked else name]
        if metric.package is None:
            continue
        module, package = metric.package
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"metric {name} needs the {package} package, which is not installed: "
                f"pip install 'lossyds[{metric.extra}]' (or {package})."
            ) from None
    wanted = {name.partition("@")[0] if modality == "audio" else name for name in names}
    for metric in table.values():
        if metric.name in wanted and metric.warm_up is not None:
            metric.warm_up()
    return names


def compute(names: list[str], source: Any, decoded: torch.Tensor, sample_rate: int | None) -> dict[str, float]:
    """Metrics of one sample. `source`: the SourceSample's array; `decoded`: the codec's tensor."""
    if sample_rate is None:  # image: decoded [C, H, W] -> [H, W, C]
        array = decoded.permute(1, 2, 0).numpy()
        return {name: IMAGE_METRICS[name](source, array) for name in names}
    array = decoded.numpy()
    return {name: _audio_metric(name, source, array, sample_rate) for name in names}


def _audio_metric(name: str, source: Any, decoded: Any, rate: int) -> float:
    """One audio metric of one sample: whole, or averaged over its chunks (`chunking`)."""
    chunked = chunking(name)
    if chunked is None:
        return AUDIO_METRICS[name](source, decoded, rate)
    base, chunks, frames = chunked
    starts = range(0, min(chunks * frames, source.shape[1]), frames)
    values = [AUDIO_METRICS[base](source[:, s : s + frames], decoded[:, s : s + frames], rate) for s in starts]
    return sum(values) / len(values) if values else float("nan")
