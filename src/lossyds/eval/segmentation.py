"""The `segmentation` task: mIoU from one confusion matrix over the dataset's classes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError
from .base import Outcome, Score, Task
from .checks import call, masks_of


@dataclass
class Segmenter:
    """What `run` calls: `segment(images, sizes)` maps `batch` uint8 [3, H, W] images and their
    masks' (H, W) to one logits [1, classes, H, W] each, at the mask's size. `num_labels`: the
    model's class count where it declares one (checked against the dataset's). `labels`: True
    where `segment` returns each image's predicted class ids, int [H, W] at the mask's size,
    instead of logits (hf:'s native-size scoring, eval option `native_size`)."""

    segment: Callable[[list[torch.Tensor], list[tuple[int, int]]], list[Any]]
    batch: int = 1
    num_labels: int | None = None
    labels: bool = False


def from_function(segment: Callable, device: torch.device) -> Segmenter:
    """A `module:function` segmenter: uint8 [1, 3, H, W] on `device` -> logits [1, classes, H, W], one image a call."""

    def one(images: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[Any]:
        with torch.no_grad():
            return [segment(images[0][None].to(device))]

    return Segmenter(one)


def segmentation_targets(mask: torch.Tensor, dataset: str) -> tuple[torch.Tensor, int]:
    """(class ids [H, W] with 255 ignored, number of classes) of a sample's label map: Cityscapes
    label ids to its 19 train ids; any other dataset as ADE20k (scene_parse_150) stores them,
    0 ignored and value v the class v - 1 of 150."""
    if dataset == "cityscapes":
        from ..sources.cityscapes import train_ids

        return train_ids(mask).long(), 19
    mask = mask.long()
    return torch.where(mask == 0, torch.full_like(mask, 255), mask - 1), 150


class _Confusion:
    """The confusion matrix over `classes`, filled one sample at a time."""

    def __init__(self) -> None:
        self.matrix: torch.Tensor | None = None

    def add(self, key: str, target: torch.Tensor, logits: torch.Tensor, classes: int) -> float:
        """Count one sample; its pixel accuracy (NaN where every pixel is ignored)."""
        return self.add_labels(key, target, logits.argmax(0), classes)

    def add_labels(self, key: str, target: torch.Tensor, prediction: torch.Tensor, classes: int) -> float:
        """Count one sample's predicted class ids [H, W]; its pixel accuracy (as `add`)."""
        prediction = prediction.long()
        if self.matrix is None:
            self.matrix = torch.zeros(classes, classes, dtype=torch.long)
        valid = target != 255
        if valid.any() and int(target[valid].max()) >= classes:
            raise UsageError(f"sample {key!r} has a class id beyond the {classes} classes.")
        self.matrix += torch.bincount(target[valid] * classes + prediction[valid], minlength=classes * classes).view(
            classes, classes
        )
        return float((prediction[valid] == target[valid]).float().mean()) if valid.any() else float("nan")

    def scores(self, classes: int) -> dict[str, Any]:
        assert self.matrix is not None
        intersection = self.matrix.diag().float()
        union = self.matrix.sum(0).float() + self.matrix.sum(1).float() - intersection
        present = union > 0
        iou = intersection[present] / union[present]
        return {
            "miou": float(iou.mean()) if present.any() else float("nan"),
            "iou_per_class": {int(c): float(v) for c, v in zip(present.nonzero().flatten(), iou)},
            "classes": classes,
        }


def _label_maps(model: str, keys: list[str], found: Any, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """A label-returning segmenter's outputs, each checked to be one id map at its mask's size."""
    maps = list(found)
    if len(maps) != len(keys):
        raise UsageError(f"--model {model} returned {len(maps)} label maps for {len(keys)} images.")
    for key, size, labels in zip(keys, sizes, maps):
        if tuple(labels.shape) != tuple(size):
            raise UsageError(f"--model {model} returned labels {tuple(labels.shape)} for sample {key!r}'s mask {size}.")
    return [labels.cpu() for labels in maps]


def run(
    samples: Iterator[dict[str, Any]], model: str, segmenter: Segmenter, dataset: str = "cityscapes"
) -> dict[str, Any]:
    """mIoU from one confusion matrix over the dataset's classes (`segmentation_targets`); the
    model's logits are checked against each mask's size and the class count. Per sample: key
    and pixel accuracy."""
    confusion = _Confusion()
    per_sample: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = []  # (sample, target, image)
    classes = 0

    def flush() -> None:
        keys, sizes = [s["key"] for s, _, _ in pending], [tuple(target.shape) for _, target, _ in pending]
        found = call(model, keys, segmenter.segment, [image for _, _, image in pending], sizes)
        if segmenter.labels:
            outputs = _label_maps(model, keys, found, sizes)
        else:
            outputs = [logits.cpu() for logits in masks_of(model, keys, found, sizes, classes)]
        for (sample, target, _), output in zip(pending, outputs):
            add = confusion.add_labels if segmenter.labels else confusion.add
            accuracy = add(sample["key"], target, output, classes)
            per_sample.append(
                {"key": sample["key"], "pixel_accuracy": accuracy, "payload_bits": sample["payload_bits"]}
            )
        pending.clear()

    for sample in samples:
        if "mask" not in sample:
            raise UsageError(f"sample {sample['key']!r} has no mask; segmentation needs label maps.")
        target, classes = segmentation_targets(sample["mask"][0].cpu(), dataset)
        if segmenter.num_labels is not None and segmenter.num_labels != classes:
            raise UsageError(
                f"the model has {segmenter.num_labels} classes and this {dataset} build {classes}: "
                "cannot score it on this dataset's labels."
            )
        image = sample["image"].expand(3, -1, -1) if sample["image"].shape[0] == 1 else sample["image"]
        pending.append((sample, target, image))
        if len(pending) == segmenter.batch:
            flush()
    if pending:
        flush()
    if not per_sample or confusion.matrix is None:
        raise UsageError("no samples to evaluate.")
    return {**confusion.scores(classes), "samples": per_sample}


def sample_pixel_accuracy(sample: dict[str, Any]) -> float | None:
    return float(sample["pixel_accuracy"]) if "pixel_accuracy" in sample else None


TASK = Task(
    name="segmentation",
    modality="image",
    default_model=None,
    scores=(Score("miou", True, "fraction (IoU)", "mean intersection over union", plotted=True),),
    outcome=Outcome("pixel_accuracy", True, "fraction of pixels", sample_pixel_accuracy),
    run=run,
    from_function=from_function,
    batch=8,
)
