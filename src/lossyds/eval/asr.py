"""The `asr` task: word error rate (jiwer) of a speech recogniser on the decoded utterances."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from .base import Outcome, Score, Task
from .checks import call, texts_of


@dataclass
class Recognizer:
    """What `run` calls: `transcribe` maps [(float32 [C, T], rate in Hz), ...] to one text per
    clip, `batch` clips at a time. `whisper`: the model's Whisper-style text normaliser, an
    object with `normalize(text)` and `spelling_map` (then `wer_whisper` is scored too)."""

    transcribe: Callable[[list[tuple[np.ndarray, int]]], list[str]]
    batch: int = 1
    whisper: Any = None


def from_function(recognize: Callable, device: torch.device) -> Recognizer:
    """A `module:function` recogniser: audio float32 [C, T], rate -> text, one clip at a time on the CPU."""
    return Recognizer(lambda clips: [recognize(audio, rate) for audio, rate in clips])


def normalize_text(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split())


def _record(sample: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "key": sample["key"],
        "reference": normalize_text(sample["text"]),
        "hypothesis": normalize_text(text),
        "reference_raw": sample["text"],
        "hypothesis_raw": text,
        "payload_bits": sample["payload_bits"],
    }


def run(samples: Iterator[dict[str, Any]], model: str, recognizer: Recognizer, dataset: str = "") -> dict[str, Any]:
    """Word error rate over all utterances. `wer` compares `normalize_text` of both sides, for
    every model alike; `wer_raw` the texts as the dataset and the model give them; with a
    Whisper normaliser (`hf:`), `wer_whisper` compares Whisper's English normaliser of both
    (with the tokenizer's spelling map where it has one: `whisper_normalizer_spelling_map`).
    Per sample: key, normalised and raw reference and hypothesis."""
    import jiwer

    per_sample: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        keys = [s["key"] for s in pending]
        clips = [(s["audio"].cpu().numpy(), s["sample_rate"]) for s in pending]
        texts = texts_of(model, keys, call(model, keys, recognizer.transcribe, clips))
        per_sample.extend(_record(sample, text) for sample, text in zip(pending, texts))
        pending.clear()

    for sample in samples:
        if not isinstance(sample.get("text"), str):
            raise UsageError(f"sample {sample['key']!r} has no transcript; asr needs a dataset with text targets.")
        pending.append(sample)
        if len(pending) == recognizer.batch:
            flush()
    if pending:
        flush()
    if not per_sample:
        raise UsageError("no samples to evaluate.")

    def wer(side: str, normalize: Callable[[str], str] = lambda text: text) -> float:
        return float(
            jiwer.wer(
                [normalize(s[f"reference{side}"]) for s in per_sample],
                [normalize(s[f"hypothesis{side}"]) for s in per_sample],
            )
        )

    result: dict[str, Any] = {"wer": wer(""), "wer_raw": wer("_raw")}
    if recognizer.whisper is not None:
        result["wer_whisper"] = wer("_raw", recognizer.whisper.normalize)
        result["whisper_normalizer_spelling_map"] = recognizer.whisper.spelling_map
    return result | {"samples": per_sample}


def sample_wer(sample: dict[str, Any]) -> float | None:
    """One utterance's WER on the normalised texts (None without a reference)."""
    if "hypothesis" not in sample or not sample.get("reference"):
        return None
    import jiwer

    return float(jiwer.wer(sample["reference"], sample["hypothesis"]))


WER_UNIT = "fraction of words"
TASK = Task(
    name="asr",
    modality="audio",
    default_model="pocketsphinx",
    scores=(
        Score("wer", False, WER_UNIT, "word error rate on lossyds's normalised text", plotted=True),
        Score("wer_raw", False, WER_UNIT, "word error rate on the texts as given", fallbacks=("wer",)),
        Score("wer_whisper", False, WER_UNIT, "word error rate with Whisper's English normaliser (hf: models)"),
    ),
    outcome=Outcome("wer", False, WER_UNIT, sample_wer),
    run=run,
    from_function=from_function,
    batch=8,
)
