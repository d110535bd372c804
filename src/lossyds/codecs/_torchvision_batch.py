"""Decode a chunk of images with torchvision's image ops in one TorchScript call.

A TorchScript function runs with the GIL released from start to end, so a loader decode
thread decodes its whole chunk (lossyds.load.parallel.DECODE_CHUNK samples) with one release
and one re-acquisition instead of one per image, which is where decode threads contend.
The ops and their arguments are the ones torchvision.io's decode_jpeg / decode_png /
decode_webp call, so the pixels are the same. Written here because torchvision decodes a
list in one call only on CUDA (decode_jpegs_cuda); on CPU its list path is a Python loop.

This module has no `from __future__ import annotations`: TorchScript reads the annotations.
"""

import threading
import warnings
from typing import Callable, Dict, List, Optional

import torch


# One function per op: TorchScript resolves torch.ops.image.<name> when it compiles, so the op cannot be a parameter.
def _decode_jpegs(datas: List[torch.Tensor], modes: List[int]) -> List[torch.Tensor]:
    images: List[torch.Tensor] = []
    for index in range(len(datas)):
        images.append(torch.ops.image.decode_jpeg(datas[index], modes[index], False))
    return images


def _decode_pngs(datas: List[torch.Tensor], modes: List[int]) -> List[torch.Tensor]:
    images: List[torch.Tensor] = []
    for index in range(len(datas)):
        images.append(torch.ops.image.decode_png(datas[index], modes[index], False))
    return images


def _decode_webps(datas: List[torch.Tensor], modes: List[int]) -> List[torch.Tensor]:
    images: List[torch.Tensor] = []
    for index in range(len(datas)):
        images.append(torch.ops.image.decode_webp(datas[index], modes[index]))
    return images


_SOURCES: Dict[str, Callable[[List[torch.Tensor], List[int]], List[torch.Tensor]]] = {
    "decode_jpeg": _decode_jpegs,
    "decode_png": _decode_pngs,
    "decode_webp": _decode_webps,
}
_compiled: Dict[str, Optional[Callable[[List[torch.Tensor], List[int]], List[torch.Tensor]]]] = {}
_lock = threading.Lock()


def batch_decoder(function_name: str) -> Optional[Callable[[List[torch.Tensor], List[int]], List[torch.Tensor]]]:
    """`(encoded uint8 tensors, torchvision ImageReadMode values) -> uint8 [C, H, W] images`
    for torchvision.io's `function_name`, compiled once per process; None when this
    torch / torchvision cannot provide it (the caller then decodes one image at a time)."""
    with _lock:
        if function_name not in _compiled:
            compiled = None
            if function_name in _SOURCES:
                try:
                    import torchvision.io  # noqa: F401  (registers torch.ops.image)

                    with warnings.catch_warnings():  # a TorchScript deprecation notice is not the user's business
                        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
                        compiled = torch.jit.script(_SOURCES[function_name])
                except Exception:  # no torchvision, no such op, or no TorchScript: per-image decoding still works
                    compiled = None
            _compiled[function_name] = compiled
        return _compiled[function_name]
