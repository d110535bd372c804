"""`--model oracle-irm` (separation): ideal ratio masks from the reference stems applied to the
decoded mixture. It needs no model and measures what the codec left recoverable."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import TaskModel


def oracle_irm(mixture: np.ndarray, stems: dict[str, np.ndarray], n_fft: int = 2048) -> dict[str, np.ndarray]:
    """Ideal ratio masks |S_i| / sum |S_j| from the reference stems, applied to the (decoded) mixture."""
    window = torch.hann_window(n_fft)

    def spec(x):
        return torch.stft(
            torch.from_numpy(np.ascontiguousarray(x)), n_fft, n_fft // 4, window=window, return_complex=True
        )  # noqa: E731

    mix = spec(mixture)
    magnitudes = {name: spec(stem).abs() for name, stem in stems.items()}
    total = sum(magnitudes.values()) + 1e-8
    return {
        name: torch.istft(mix * (magnitude / total), n_fft, n_fft // 4, window=window, length=mixture.shape[-1]).numpy()
        for name, magnitude in magnitudes.items()
    }


def load(argument: str, task: str, device: torch.device, batch: int) -> Any:
    from .separation import Separator

    return Separator(lambda mixture, rate, stems: oracle_irm(mixture, stems), checked=False)


MODEL = TaskModel(
    name="oracle-irm",
    tasks=("separation",),
    load=load,
    summary="the ideal ratio mask from the reference stems (an upper bound, nothing learned)",
    takes_argument=False,
)
