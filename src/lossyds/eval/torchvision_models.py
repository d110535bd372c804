"""`--model torchvision:NAME` (classification): a torchvision classifier with its pretrained
weights from the user's torch cache; missing weights are an error, never a download."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UsageError
from .base import TaskModel
from .checks import failure


def torchvision_classifier(name: str, device: torch.device | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    import torchvision

    from ..weights import torch_hub_checkpoints

    device = device or torch.device("cpu")
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        network = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:  # only the lookup: the cache's own errors below keep their sentence
        raise UsageError(f"torchvision has no model {name!r}.") from exc
    cached = torch_hub_checkpoints() / Path(weights.url).name
    if not cached.is_file():
        raise UsageError(
            f"pretrained weights for torchvision:{name} are not cached; put {Path(weights.url).name} in {cached.parent} (from {weights.url})."
        )
    try:
        network.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
    except Exception as exc:  # a damaged or foreign file in the cache
        raise UsageError(f"{cached} is not torchvision:{name}'s weights ({failure(exc)}).") from exc
    network.eval().to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def classify(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network((images.to(device).float() / 255 - mean) / std)

    return classify


def load(argument: str, task: str, device: torch.device, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return torchvision_classifier(argument, device)  # uint8 [N, 3, 224, 224] -> logits, as a module:function


MODEL = TaskModel(
    name="torchvision",
    tasks=("classification",),
    load=load,
    spelling="torchvision:NAME",
    summary="a torchvision classifier by name, its weights from torch hub's cache",
)
