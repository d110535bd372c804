"""Demucs source separation for `lossyds eval --task separation --model demucs:NAME_OR_PATH`.

`demucs:htdemucs` (any name in the demucs package's model list) loads the pretrained model
from torch hub's checkpoint cache, where `demucs` itself stores its downloads, and never from
the network: a missing file is one sentence naming it, its URL and the folder to put it in.
`demucs:PATH` loads a checkpoint: a package `torch.save`d with `klass`, `args`, `kwargs` and
`state` (what `demucs.states.serialize_model` writes), or a `.safetensors` file from the
demucs Hugging Face repositories.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from .base import TaskModel

# The demucs command line's defaults (`demucs.separate`), which the reference study used.
DEFAULT_SHIFTS = 1
DEFAULT_OVERLAP = 0.25


def _demucs() -> Any:
    try:
        import demucs.apply  # noqa: F401
        import demucs.pretrained  # noqa: F401
    except ImportError:
        raise UsageError("--model demucs:... needs the demucs package: pip install 'lossyds[eval]'.") from None
    import demucs

    return demucs


def pretrained_files(name: str) -> list[tuple[str, str]]:
    """(file name, URL) of each checkpoint the named pretrained model (a bag of models) needs,
    from the lists the demucs package ships; [] when the package does not know the name."""
    _demucs()
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files

    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")  # signature -> URL
    bag = REMOTE_ROOT / f"{name}.yaml"
    if bag.exists():
        import yaml

        signatures = yaml.safe_load(bag.read_text())["models"]
    elif name in urls:
        signatures = [name]
    else:
        return []
    return [(urls[sig].rsplit("/", 1)[1], urls[sig]) for sig in signatures]


def load_demucs(spec: str) -> Any:
    """The demucs model (a `BagOfModels` for the named pretrained ones) for `demucs:SPEC`, on the CPU,
    in eval mode. A checkpoint package is unpickled (`weights_only=False`, as demucs does): pass only
    files you trust."""
    _demucs()
    from demucs.repo import AnyModelRepo, BagOnlyRepo, LocalRepo, ModelLoadingError

    path = Path(spec).expanduser()
    if path.is_dir():
        raise UsageError(f"demucs:{spec} is a folder: pass one checkpoint file (.th or .safetensors) or a model name.")
    if path.is_file():
        try:
            if path.suffix == ".safetensors":
                from demucs.hf import load_safetensors_model

                return load_safetensors_model(path).eval()
            from demucs.states import load_model

            return load_model(str(path)).eval()
        except ImportError as exc:  # a quantised model needs diffq
            raise UsageError(f"demucs:{spec} needs a package that is not installed: {exc}.") from None
        except Exception as exc:  # a pickle, safetensors or state that is not a demucs model's
            raise UsageError(
                f"demucs:{spec} is not a demucs checkpoint (a package with klass, args, kwargs and state, "
                f"or demucs's safetensors): {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
    if path.suffix in (".th", ".pt", ".pth", ".safetensors") or "/" in spec:
        raise UsageError(f"demucs:{spec}: no such checkpoint file.")
    files = pretrained_files(spec)
    if not files:
        from demucs.pretrained import REMOTE_ROOT

        names = sorted(p.stem for p in REMOTE_ROOT.glob("*.yaml"))
        raise UsageError(f"demucs has no pretrained model {spec!r}; its models are: {', '.join(names)}.")
    from ..weights import torch_hub_checkpoints

    cache = torch_hub_checkpoints()
    missing = [(file, url) for file, url in files if not (cache / file).exists()]
    if missing:
        raise UsageError(
            f"demucs:{spec} needs {', '.join(f for f, _ in missing)} in torch hub's cache: download "
            f"{' and '.join(u for _, u in missing)} and put it in {cache}/ (or run `demucs` once where there is a network)."
        )
    from demucs.pretrained import REMOTE_ROOT

    try:
        # The checkpoint folder as a local repository: demucs checks each file's sha256 prefix
        # (the part of its name after the dash) before it unpickles it.
        model_repo = LocalRepo(cache)
        return AnyModelRepo(model_repo, BagOnlyRepo(REMOTE_ROOT, model_repo)).get_model(spec).eval()
    except ModelLoadingError as exc:
        raise UsageError(f"demucs:{spec}: {exc}") from None


class DemucsSeparator:
    """A demucs model applied as its own command line does: the mixture converted to the model's
    rate and channels, normalised by the mean and standard deviation of its mono mix, split into
    the model's segments with `overlap`, averaged over `shifts` random time shifts (drawn from a
    fixed seed, so a run repeats), and scaled back.

    Called with the mixture, float32 numpy [channels, frames] at `rate` Hz, it returns
    {stem: float32 numpy [channels, frames]} at the mixture's rate and channel count, for the
    model's stems."""

    def __init__(
        self,
        spec: str,
        device: torch.device,
        shifts: int = DEFAULT_SHIFTS,
        overlap: float = DEFAULT_OVERLAP,
        seed: int = 0,
    ):
        self.model = load_demucs(spec).to(device)
        self.device = device
        self.shifts = shifts
        self.overlap = overlap
        self.seed = seed
        self.sources: list[str] = list(self.model.sources)

    def check_stems(self, stems: list[str]) -> None:
        """Refuse, in one sentence, a dataset whose reference stems the model does not produce."""
        missing = [name for name in stems if name not in self.sources]
        if missing:
            raise UsageError(
                f"the demucs model separates {', '.join(self.sources)}; this build's stem(s) "
                f"{', '.join(missing)} are not among them."
            )

    def __call__(self, mixture: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        from demucs.apply import apply_model
        from demucs.audio import convert_audio

        if mixture.shape[0] not in (1, self.model.audio_channels):
            raise UsageError(
                f"the demucs model takes {self.model.audio_channels}-channel or mono audio; this mixture has "
                f"{mixture.shape[0]} channels."
            )
        wav = convert_audio(
            torch.from_numpy(np.ascontiguousarray(mixture)), rate, self.model.samplerate, self.model.audio_channels
        )
        reference = wav.mean(0)
        mean, std = reference.mean(), reference.std() + 1e-8
        state = random.getstate()  # apply_model draws its shifts from the global `random`
        random.seed(self.seed)
        try:
            with torch.no_grad():
                out = apply_model(
                    self.model,
                    ((wav - mean) / std)[None],
                    shifts=self.shifts,
                    split=True,
                    overlap=self.overlap,
                    device=self.device,
                )[0]
        finally:
            random.setstate(state)
        out = out.cpu() * std + mean  # [sources, model channels, model frames]
        estimates = {}
        for name, stem in zip(self.sources, out):
            stem = convert_audio(stem, self.model.samplerate, rate, mixture.shape[0])
            stem = torch.nn.functional.pad(stem, (0, max(0, mixture.shape[-1] - stem.shape[-1])))
            estimates[name] = stem[..., : mixture.shape[-1]].numpy().astype(np.float32)
        return estimates


def load(argument: str, task: str, device: torch.device, batch: int) -> Any:
    from .separation import Separator

    separator = DemucsSeparator(argument, device)
    return Separator(lambda mixture, rate, stems: separator(mixture, rate), separator.check_stems)


def missing(argument: str) -> str | None:
    """None where `demucs:argument` is a checkpoint file or a pretrained model whose files are
    all in torch hub's checkpoint cache, else which files to put where."""
    if Path(argument).expanduser().is_file():
        return None
    if argument.endswith((".th", ".pt", ".pth", ".safetensors")) or "/" in argument:
        return f"demucs:{argument}: no such checkpoint file"
    try:
        files = pretrained_files(argument)
    except UsageError as exc:
        return str(exc).rstrip(".")
    if not files:
        return f"demucs has no pretrained model {argument!r}"
    from ..weights import torch_hub_checkpoints

    cache = torch_hub_checkpoints()
    absent = [(file, url) for file, url in files if not (cache / file).is_file()]
    if not absent:
        return None
    return f"demucs:{argument} needs " + " and ".join(f"{url} at {cache / file}" for file, url in absent)


MODEL = TaskModel(
    name="demucs",
    tasks=("separation",),
    load=load,
    spelling="demucs:NAME_OR_PATH",
    summary="a pretrained Demucs from torch hub's cache, or a checkpoint file",
    missing=missing,
)
