"""The `separation` task: plain SDR per stem and, where museval is installed, BSSEval v4."""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from .base import Outcome, Score, Task
from .checks import call, stems_of


@dataclass
class Separator:
    """What `run` calls: `separate(mixture, rate, stems)` maps the decoded mixture (float32
    numpy [C, T]) and its rate to {stem: [C, T]}; `stems` are the references, which only an
    oracle may read. `check_stems(names)` refuses stems the model does not produce; `checked`
    False skips the output checks (an oracle built here, not a model)."""

    separate: Callable[[np.ndarray, int, dict[str, np.ndarray]], Any]
    check_stems: Callable[[list[str]], None] | None = None
    checked: bool = True


def from_function(separate: Callable, device: torch.device) -> Separator:
    """A `module:function` separator: mixture [C, T], rate -> {stem: [C, T]}, on the CPU."""
    return Separator(lambda mixture, rate, stems: separate(mixture, rate), getattr(separate, "check_stems", None))


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain signal-to-distortion ratio in dB (not BSSEval's projection-based SDR)."""
    noise = reference - estimate
    return 10 * math.log10((np.sum(reference**2) + 1e-12) / (np.sum(noise**2) + 1e-12))


# BSSEval v4 framing of the reference study (and SiSEC 2018): 2 s windows every 1.5 s.
BSS_WINDOW_SECONDS = 2.0
BSS_HOP_SECONDS = 1.5
BSS_METRICS = ("SDR", "SIR", "SAR", "ISR")


def bss_eval_v4(
    stems: dict[str, np.ndarray], estimates: dict[str, np.ndarray], rate: int
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """museval's BSSEval v4 image metrics in dB, per stem: ({stem: {SDR, SIR, SAR, ISR}}, each the
    median over 2 s frames taken every 1.5 s, and {stem: SDR of every frame}). Frames where a
    reference is silent are NaN in museval: left out of the medians and the frame lists, as the
    reference study left them out of its mean.
    A clip shorter than one window is one frame.
    stems and estimates: float32 [channels, frames] at `rate` Hz, the same stem names."""
    import museval

    names = list(stems)
    references = np.stack([stems[name].T for name in names])  # [stems, frames, channels]
    estimated = np.stack([estimates[name][..., : references.shape[1]].T for name in names])
    window = min(int(BSS_WINDOW_SECONDS * rate), references.shape[1])
    values = museval.evaluate(references, estimated, win=window, hop=int(BSS_HOP_SECONDS * rate))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames: the median is NaN
        medians = {
            name: {metric: float(np.nanmedian(table[i])) for metric, table in zip(("SDR", "ISR", "SIR", "SAR"), values)}
            for i, name in enumerate(names)
        }
    frames = {name: [float(v) for v in values[0][i] if not np.isnan(v)] for i, name in enumerate(names)}
    return medians, frames


def _separate(model: str, separator: Separator, sample: dict[str, Any], with_bss: bool) -> dict[str, Any]:
    """One sample's record: its plain SDR per stem and, with museval, BSSEval per stem and frame."""
    stems = {name: tensor.cpu().numpy() for name, tensor in (sample.get("stems") or {}).items()}
    if not stems:
        raise UsageError(f"sample {sample['key']!r} has no reference stems.")
    mixture = sample["audio"].cpu().numpy()
    if separator.check_stems is not None:
        separator.check_stems(list(stems))
    if separator.checked:
        found = call(model, [sample["key"]], separator.separate, mixture, sample["sample_rate"], stems)
        estimates = stems_of(model, sample["key"], found, stems)
    else:
        estimates = separator.separate(mixture, sample["sample_rate"], stems)
    sample_scores = {name: sdr(reference, estimates[name]) for name, reference in stems.items()}
    record = {"key": sample["key"], "sdr_per_stem": sample_scores, "payload_bits": sample["payload_bits"]}
    if with_bss:
        record["bsseval_per_stem"], record["bsseval_sdr_frames"] = bss_eval_v4(stems, estimates, sample["sample_rate"])
    return record


def _bsseval(per_sample: list[dict[str, Any]], stems: list[str]) -> dict[str, Any]:
    """BSSEval over tracks: SiSEC's median of medians per stem and metric, their mean SDR over
    stems, and the mean SDR over every non-NaN frame of every stem and track."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_stem_bss = {
            name: {
                metric: float(np.nanmedian([s["bsseval_per_stem"][name][metric] for s in per_sample]))
                for metric in BSS_METRICS
            }
            for name in stems
        }
    frames = [v for s in per_sample for values in s["bsseval_sdr_frames"].values() for v in values]
    return {
        "sdr": float(np.nanmean([values["SDR"] for values in per_stem_bss.values()])),
        "per_stem": per_stem_bss,
        "sdr_mean_over_frames": float(np.mean(frames)) if frames else float("nan"),
    }


def run(samples: Iterator[dict[str, Any]], model: str, separator: Separator, dataset: str = "") -> dict[str, Any]:
    """Plain SDR per stem and, where museval is installed, BSSEval v4 (`bss_eval_v4`) per stem.
    Per sample: key, SDR per stem, BSSEval per stem and its per-frame SDRs. Over samples: the
    mean plain SDR; BSSEval's median over tracks (SiSEC's aggregate) and, as the reference study
    aggregated it, the mean SDR over every non-NaN frame of every stem and track."""
    with_bss = importlib.util.find_spec("museval") is not None
    scores: dict[str, list[float]] = {}
    per_sample: list[dict[str, Any]] = []
    for sample in samples:
        record = _separate(model, separator, sample, with_bss)
        for name, value in record["sdr_per_stem"].items():
            scores.setdefault(name, []).append(value)
        per_sample.append(record)
    if not per_sample:
        raise UsageError("no samples to evaluate.")
    per_stem = {name: float(np.mean(values)) for name, values in scores.items()}
    result: dict[str, Any] = {
        "sdr": float(np.mean(list(per_stem.values()))),
        "sdr_per_stem": per_stem,
        "sdr_kind": "plain SDR (not BSSEval)",
        "bsseval": None,
        "bsseval_note": "museval is not installed: pip install 'lossyds[eval]'",
        "samples": per_sample,
    }
    if with_bss:
        result["bsseval"] = _bsseval(per_sample, list(per_stem))
        result["bsseval_note"] = (
            f"museval BSSEval v4, {BSS_WINDOW_SECONDS:g} s windows every {BSS_HOP_SECONDS:g} s: `sdr` is the mean over "
            "stems of the median over tracks of the median over frames (SiSEC); `sdr_mean_over_frames` is the mean "
            "over every frame of every stem and track, NaN frames left out (the reference study's aggregate)"
        )
    return result


def sample_sdr(sample: dict[str, Any]) -> float | None:
    """One track's plain SDR, the mean over its stems."""
    stems = sample.get("sdr_per_stem")
    return sum(stems.values()) / len(stems) if stems else None


TASK = Task(
    name="separation",
    modality="audio",
    default_model="oracle-irm",
    scores=(
        Score("sdr", True, "dB", "plain signal-to-distortion ratio, mean over stems", plotted=True),
        Score("bsseval_sdr", True, "dB", "BSSEval v4 SDR (SiSEC's median over tracks)", path=("bsseval", "sdr")),
        Score(
            "bsseval_sdr_mean_over_frames",
            True,
            "dB",
            "BSSEval v4 SDR, the mean over every frame (the reference study's aggregate)",
            path=("bsseval", "sdr_mean_over_frames"),
            printed=False,
            fallbacks=("bsseval_sdr", "sdr"),
        ),
    ),
    outcome=Outcome("sdr", True, "dB", sample_sdr),
    run=run,
    from_function=from_function,
)
