"""`--model pocketsphinx` (asr): offline recognition with the English model its wheel ships."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import UsageError
from .base import TaskModel


def pocketsphinx_recognizer() -> Callable[[np.ndarray, int], str]:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise UsageError("asr with pocketsphinx needs it installed: pip install pocketsphinx jiwer") from exc
    from ..codecs._audio import resample

    decoder = Decoder(samprate=16000, loglevel="FATAL")

    def recognize(audio: np.ndarray, rate: int) -> str:
        mono = resample(audio.mean(axis=0, keepdims=True).astype(np.float32), rate, 16000)[0]
        pcm = (np.clip(mono, -1, 1) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    return recognize


def load(argument: str, task: str, device: torch.device, batch: int) -> Callable[[np.ndarray, int], str]:
    return pocketsphinx_recognizer()  # one clip at a time, as a module:function recogniser


MODEL = TaskModel(
    name="pocketsphinx",
    tasks=("asr",),
    load=load,
    summary="CMU PocketSphinx with the US English model its package ships",
    takes_argument=False,
)
