"""Shared machinery of neural codecs: lazy model construction from checked weights."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

from ..options import Option
from ..weights import WeightsError, WeightsInfo, find_pretrained, load_checkpoint, parse_spec, state_dict_sha256

WEIGHTS_OPTION = Option(
    "weights",
    str,
    "Neural codecs: a checkpoint path, or random:SEED for test weights (default: the pretrained weights).",
)


def resolve_weights(
    kind: str,
    value: Any,
    new: Callable[[], torch.nn.Module],
    from_state: Callable[[dict[str, torch.Tensor]], torch.nn.Module],
    pretrained: Callable[[], tuple[str, str | None]],
    what: str,
    prepare: Callable[[torch.nn.Module], None] | None = None,
) -> tuple[torch.nn.Module, WeightsInfo]:
    """A module in eval mode and its WeightsInfo, from parse_spec's (kind, value): `new()` under
    seed `value` for "random", `from_state` of the checkpoint file for "file", of the
    pretrained checkpoint `pretrained()` names (looked up, or downloaded) for "pretrained".
    `prepare` runs before the fingerprint is taken (it may fill buffers, e.g. entropy tables)."""
    if kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(value)
            module = new()
        name = f"random:{value}"
    else:
        path = value if kind == "file" else find_pretrained(*pretrained())
        try:
            module = from_state(load_checkpoint(path))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise WeightsError(f"{path} does not fit {what}: {str(exc).splitlines()[0][:300]}") from exc
        name = path.name
    module.eval()
    if prepare is not None:
        with torch.no_grad():
            prepare(module)
    return module, WeightsInfo(name=name, sha256=state_dict_sha256(module.state_dict()), source=kind)


class NeuralModelMixin:
    """Builds `self.model` on first use from `self.params["weights"]` (see lossyds.weights)."""

    uses_weights: ClassVar[bool] = True
    options: ClassVar[tuple[Option, ...]] = (WEIGHTS_OPTION,)
    package: ClassVar[str]  # the Python package that implements the model

    @classmethod
    def package_installed(cls) -> bool:
        import importlib.util

        return importlib.util.find_spec(cls.package) is not None

    def require_package(self) -> None:
        from ..errors import UsageError

        if not self.package_installed():
            raise UsageError(f"{self.name} needs the {self.package} package: pip install 'lossyds[neural]'.")

    params: dict[str, Any]
    name: ClassVar[str]
    _model: torch.nn.Module | None = None
    _weights: WeightsInfo | None = None

    # -- to implement -------------------------------------------------------------------
    def new_model(self) -> torch.nn.Module:
        """The architecture with fresh (random) parameters."""
        raise NotImplementedError

    def model_from_state(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        raise NotImplementedError

    def pretrained_source(self) -> tuple[str, str | None]:
        """(checkpoint file name, official URL or None)."""
        raise NotImplementedError

    def prepare(self, model: torch.nn.Module) -> None:
        """After weights are in: build entropy tables, set the bandwidth, ..."""

    # -- shared -------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._load()
        assert self._model is not None
        return self._model

    def weights_info(self) -> WeightsInfo:
        if self._weights is None:
            self._load()
        assert self._weights is not None
        return self._weights

    def _load(self) -> None:
        kind, value = parse_spec(self.params.get("weights"))
        self._model, self._weights = resolve_weights(
            kind, value, self.new_model, self.model_from_state, self.pretrained_source, self.name, self.prepare
        )

    def module_on(self, device: str | torch.device, part: str | None = None) -> torch.nn.Module:
        """`self.model` (or its submodule `part`) on `device`: the model itself on CPU, else a
        copy made once per device. Entropy decoding always uses the CPU model."""
        module = self.model if part is None else getattr(self.model, part)
        device = torch.device(device)
        if device.type == "cpu":
            return module
        copies: dict[tuple[str, str | None], torch.nn.Module] = self.__dict__.setdefault("_device_copies", {})
        if (str(device), part) not in copies:
            copies[(str(device), part)] = (
                self.copy_module(part).to(device).to(memory_format=torch.contiguous_format).eval()
            )  # NCHW: the layout cuDNN kernels are tuned for
        return copies[(str(device), part)]

    def copy_module(self, part: str | None = None) -> torch.nn.Module:
        """An independent copy of `self.model` (or its submodule `part`) with the same weights."""
        try:
            whole = None if part is not None else copy.deepcopy(self.model)
            return whole if whole is not None else copy.deepcopy(getattr(self.model, part))
        except RuntimeError:  # weight_norm's derived tensors refuse deepcopy (EnCodec): rebuild from the state dict
            rebuilt = self.model_from_state(self.model.state_dict())
            rebuilt.eval()
            with torch.no_grad():
                self.prepare(rebuilt)
            return rebuilt if part is None else getattr(rebuilt, part)

    # -- batched encoding: analysis batched on a device, entropy coding per sample on CPU ------
    #
    # The contract (docs/codecs.md, "Batched encoding"): only the analysis transform, which the
    # decoder never recomputes, runs batched and on `device`. Everything the decoder recomputes
    # to entropy-decode (hyper-analysis and hyper-synthesis, scales and means, the context
    # model, EnCodec's LM) runs through the library's own compress, on CPU, one sample at a
    # time, as decoding runs it; so a bitstream made on any device decodes on any CPU.

    batched_analysis: ClassVar[bool] = True

    def analysis_input(self, sample: Any) -> torch.Tensor:
        """One sample's model input on CPU (padded image [3, Hp, Wp], or audio [C, T] at the model rate)."""
        raise NotImplementedError

    def analyse(self, inputs: list[torch.Tensor], device: str | torch.device = "cpu") -> list[Any]:
        """The analysis transform of every input, run in batches of inputs of one shape on
        `device`; each result is back on CPU, ready for `entropy_code`."""
        raise NotImplementedError

    def entropy_code(self, sample: Any, analysis: Any) -> bytes:
        """One sample's bitstream from its `analyse` result, coded on CPU as the decoder decodes it."""
        raise NotImplementedError

    def encode_batch_samples(self, samples: list[Any], device: str | torch.device = "cpu") -> list[bytes]:
        """Bitstreams of `samples`: one batched analysis on `device`, then per-sample entropy coding."""
        analyses = self.analyse([self.analysis_input(sample) for sample in samples], device)
        return [self.entropy_code(sample, analysis) for sample, analysis in zip(samples, analyses)]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without derived caches (device copies, the entropy-decoding view)."""
        state = dict(self.__dict__)
        for derived in ("_device_copies", "_entropy_view_cache"):
            state.pop(derived, None)
        return state

    def check_weights(self, recorded: dict[str, Any]) -> None:
        """Refuse to decode a dataset built with other weights (one sentence naming both).
        `recorded`: the manifest's codec "weights" entry (at least its "sha256")."""
        expected_sha256 = recorded["sha256"]
        have = self.weights_info().sha256
        if have != expected_sha256:
            raise WeightsError(
                f"{self.name}: the dataset was built with weights sha256 {expected_sha256[:16]}..., but the weights given ({self.weights_info().name}) are {have[:16]}...; pass the weights it was built with."
            )


def shape_groups(inputs: list[torch.Tensor]) -> list[list[int]]:
    """Indexes of `inputs` grouped by tensor shape, in first-seen order: the batches an analysis
    runs. Inputs of different shapes are never padded to a common one: padding changes the
    analysis output of every sample it is added to (tests/test_batched_encode.py shows it)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, tensor in enumerate(inputs):
        groups.setdefault(tuple(tensor.shape), []).append(index)
    return list(groups.values())


@contextlib.contextmanager
def without_tf32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls while an analysis runs (no effect on
    CPU). TF32 keeps 10 mantissa bits, so it would move far more latent elements across a
    rounding boundary than float32 rounding does (the tolerance in docs/codecs.md)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
