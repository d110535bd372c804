"""The `classification` task: top-1 / top-5 accuracy of an image classifier."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError
from .base import Outcome, Score, Task
from .checks import call, logits_of


@dataclass
class Classifier:
    """What `run` calls: `classify(images)` maps a list of the transformed samples' images to
    logits [N, classes]. `labels`: an object that maps the dataset's labels to the model's
    (`model_index(sample)`, `labels`), for models with their own label set (`hf:`)."""

    classify: Callable[[list[torch.Tensor]], Any]
    labels: Any = None


def from_function(classify: Callable, device: torch.device) -> Classifier:
    """A `module:function` classifier: uint8 [N, 3, 224, 224] on `device` -> logits [N, classes]."""
    return Classifier(lambda images: classify(torch.stack(images).to(device)))


def center_crop_224(image: torch.Tensor) -> torch.Tensor:
    """uint8 [C, H, W] -> uint8 [3, 224, 224]: shorter side to 256, centre crop (the ImageNet protocol)."""
    import torchvision.transforms.v2.functional as F

    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return F.center_crop(F.resize(image, 256, antialias=True), [224, 224])


def classification_input(sample: dict[str, Any]) -> dict[str, Any]:
    """The dataset transform for classification (runs in the decode threads or workers):
    the image centre-cropped to 224x224 (`center_crop_224`), the label checked."""
    if not isinstance(sample.get("label"), int):
        raise UsageError(f"sample {sample['key']!r} has no integer label.")
    return {
        "key": sample["key"],
        "label": sample["label"],
        "payload_bits": sample["payload_bits"],
        "image": center_crop_224(sample["image"]),
    }


def _records(pending: list[dict[str, Any]], best: list[list[int]], labels: Any) -> list[dict[str, Any]]:
    records = []
    for sample, top in zip(pending, best):
        target = sample["label"] if labels is None else labels.model_index(sample)
        record = {"key": sample["key"], "label": sample["label"], "top5": top}
        if labels is not None:
            record["model_label"] = target
            record["top5_names"] = [labels.labels[i] for i in top]
        record.update({"correct": top[0] == target, "in_top5": target in top, "payload_bits": sample["payload_bits"]})
        records.append(record)
    return records


def run(
    samples: Iterator[dict[str, Any]], model: str, classifier: Classifier, dataset: str = "", batch: int = 32
) -> dict[str, Any]:
    """Top-1 / top-5 over samples already passed through the decode-side transform
    (`classification_input`, or the model's own, e.g. `hf_classification_input`). Per sample:
    key, label, the top-5 predictions in the model's label order, whether the label is first
    and among them."""
    per_sample: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        images, keys = [s["image"] for s in pending], [s["key"] for s in pending]
        logits = logits_of(model, keys, call(model, keys, classifier.classify, images))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        per_sample.extend(_records(pending, best.tolist(), classifier.labels))
        pending.clear()

    for sample in samples:
        pending.append(sample)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    if not per_sample:
        raise UsageError("no samples to evaluate.")
    total = len(per_sample)
    top1 = sum(s["correct"] for s in per_sample)
    top5 = sum(s["in_top5"] for s in per_sample)
    return {"top1": top1 / total, "top5": top5 / total, "count": total, "samples": per_sample}


def sample_correct(sample: dict[str, Any]) -> float | None:
    return float(sample["correct"]) if "correct" in sample else None


TASK = Task(
    name="classification",
    modality="image",
    default_model=None,
    scores=(
        Score("top1", True, "fraction of samples", "top-1 accuracy", plotted=True),
        Score("top5", True, "fraction of samples", "top-5 accuracy", plotted=True),
    ),
    outcome=Outcome("top1", True, "0 or 1", sample_correct),
    run=run,
    from_function=from_function,
    transform=classification_input,
    batch=32,
)
