"""Shared machinery of neural codecs: lazy model construction from checked weights."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..weights import WeightsError, WeightsInfo, find_pretrained, load_checkpoint, parse_spec, state_dict_sha256


class NeuralModelMixin:
    """Builds `self.model` on first use from `self.params["weights"]` (see lossyds.weights)."""

    uses_weights: ClassVar[bool] = True
    package: ClassVar[str]  # the Python package that implements the model

    def require_package(self) -> None:
        import importlib.util

        from ..errors import UsageError

        if importlib.util.find_spec(self.package) is None:
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
        if kind == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(value)
                model = self.new_model()
            name = f"random:{value}"
        else:
            path = value if kind == "file" else find_pretrained(*self.pretrained_source())
            try:
                model = self.model_from_state(load_checkpoint(path))
            except (RuntimeError, KeyError, ValueError) as exc:
                raise WeightsError(f"{path} does not fit {self.name}: {str(exc).splitlines()[0][:300]}") from exc
            name = path.name
        model.eval()
        with torch.no_grad():
            self.prepare(model)
        self._model = model
        self._weights = WeightsInfo(name=name, sha256=state_dict_sha256(model.state_dict()), source=kind)

    def check_weights(self, expected_sha256: str) -> None:
        """Refuse to decode a dataset built with other weights (one sentence naming both)."""
        have = self.weights_info().sha256
        if have != expected_sha256:
            raise WeightsError(f"{self.name}: the dataset was built with weights sha256 {expected_sha256[:16]}..., but the weights given ({self.weights_info().name}) are {have[:16]}...; pass the weights it was built with.")
