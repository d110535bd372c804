"""Model weights for neural codecs: where they come from, and their fingerprint.

`--weights` takes:
- a checkpoint path (a state dict, loaded with `torch.load(weights_only=True)`);
- `random:SEED`: random initialisation with that seed. Test weights only: labelled
  `"source": "random"` in the manifest and warned about in the build summary;
- nothing: the pretrained checkpoint, looked up as FILENAME in `$LOSSYDS_WEIGHTS_DIR`,
  then in the library's own cache (torch hub's `checkpoints/` folder), then downloaded
  there from its official URL when the network answers (set `LOSSYDS_NO_DOWNLOAD=1`
  to never try). Missing weights are an error that says where to put the file; lossyds
  never falls back to random weights by itself.

The fingerprint of a model is the sha256 of its state dict (names and tensor bytes in
sorted order), so the same weights match whichever file or seed they came from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import LossydsError, UsageError


class WeightsError(LossydsError):
    """Weights are missing, unreadable, or not the ones a dataset was built with."""


@dataclass(frozen=True)
class WeightsInfo:
    name: str  # checkpoint file name, or "random:SEED"
    sha256: str  # state-dict fingerprint
    source: str  # "pretrained" | "file" | "random"

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def parse_spec(spec: str | None) -> tuple[str, Any]:
    """('pretrained', None) | ('random', seed) | ('file', Path)."""
    if spec is None or spec == "pretrained":
        return "pretrained", None
    if spec.startswith("random:"):
        try:
            return "random", int(spec.split(":", 1)[1])
        except ValueError:
            raise UsageError(f"--weights random:SEED needs an integer seed (got {spec!r}).") from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(
            f"--weights {spec} is not a file (give a checkpoint path, random:SEED, or nothing for the pretrained weights)."
        )
    return "file", path


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file, never unpickling arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise WeightsError(
            f"cannot read weights {path}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    return state


def torch_hub_checkpoints() -> Path:
    """torch hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), where torchvision, lpips and
    demucs keep the files they download."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("LOSSYDS_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["LOSSYDS_WEIGHTS_DIR"]).expanduser())
    dirs.append(torch_hub_checkpoints())
    return dirs


def find_pretrained(filename: str, url: str | None) -> Path:
    """The pretrained checkpoint FILENAME from the cache folders, downloading it when possible."""
    for folder in cache_dirs():
        if (folder / filename).is_file():
            return folder / filename
    target = cache_dirs()[-1] / filename
    if url and not os.environ.get("LOSSYDS_NO_DOWNLOAD"):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with (
                urllib.request.urlopen(url, timeout=20) as response,
                tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp,
            ):
                shutil.copyfileobj(response, tmp)
            os.replace(tmp.name, target)
            return target
        except OSError:
            pass
    places = " or ".join(str(d / filename) for d in cache_dirs())
    raise WeightsError(
        f"pretrained weights {filename} are not here and could not be downloaded; put the file at {places} (from {url}), pass --weights PATH, or --weights random:SEED for test weights."
    )
