"""Hugging Face task models for `lossyds eval --model hf:ID_OR_PATH`, each with its own processor.

Models load from a local folder (`save_pretrained`) or the user's Hugging Face cache, never from
the network (`local_files_only`). Image classification maps the model's `id2label` onto the
dataset's classes by name (the samples' `class_name`, or the ImageNet `wnid`), so an ImageNet
model scores a build of any subset of the 1000 classes, and a Beans or X-ray model its own
labels; it falls back to equal integer ids only where the dataset names no classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from .errors import UsageError


def _load(kind: str, spec: str) -> tuple[Any, Any]:
    """(model, processor) for `hf:ID_OR_PATH`, from the folder or the Hugging Face cache."""
    try:
        import transformers
    except ImportError:
        raise UsageError("--model hf:... needs transformers: pip install 'lossyds[hf]'.") from None
    auto_model = getattr(transformers, f"AutoModelFor{kind}")
    try:
        model = auto_model.from_pretrained(spec, local_files_only=True)
        processor = transformers.AutoImageProcessor.from_pretrained(spec, local_files_only=True)
    except OSError as exc:
        raise UsageError(
            f"hf:{spec} is neither a model folder nor in the Hugging Face cache (HF_HOME): fetch it where there is a "
            f"network (huggingface-cli download {spec}) or pass the folder save_pretrained wrote ({exc.__class__.__name__})."
        ) from None
    return model.eval(), processor


def label_key(name: str) -> str:
    """Label names compared loosely: case, underscores, hyphens and repeated spaces ignored."""
    return re.sub(r"[\s_-]+", " ", str(name)).strip().lower()


class HFImageClassifier:
    """`AutoModelForImageClassification` with its image processor. Called with decoded uint8
    images [3, H, W] (any sizes), it returns logits [N, num_labels] in the model's label order."""

    def __init__(self, spec: str, device: torch.device):
        self.model, self.processor = _load("ImageClassification", spec)
        self.model.to(device)
        self.device = device
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self._index = {label_key(name): i for i, name in enumerate(self.labels)}

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        inputs = self.processor(images=[image.cpu() for image in images], return_tensors="pt")
        with torch.no_grad():
            return self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits.cpu()

    def model_index(self, sample: dict[str, Any]) -> int:
        """The model's index of the sample's class: by name where the sample names its class
        (`class_name`, then `wnid`), else its integer label. Refuses, in one sentence, a class
        the model does not have."""
        names = [sample[field] for field in ("class_name", "wnid") if isinstance(sample.get(field), str)]
        for name in names:
            if label_key(name) in self._index:
                return self._index[label_key(name)]
        if names:
            raise UsageError(
                f"the model's {len(self.labels)} labels (id2label: {', '.join(self.labels[:3])}, ...) do not include "
                f"the dataset's class {names[0]!r} (sample {sample['key']!r}): cannot map its labels to this dataset's."
            )
        if not 0 <= sample["label"] < len(self.labels):
            raise UsageError(
                f"sample {sample['key']!r} has label {sample['label']} and no class name, outside the model's "
                f"{len(self.labels)} labels: cannot map its labels to this dataset's."
            )
        return sample["label"]


def hf_classification_input(sample: dict[str, Any]) -> dict[str, Any]:
    """The dataset transform for an hf: classifier: the whole decoded image (grey repeated to
    three channels; the model's processor resizes and crops), its label and class names."""
    if not isinstance(sample.get("label"), int):
        raise UsageError(f"sample {sample['key']!r} has no integer label.")
    image = sample["image"]
    return {
        "key": sample["key"],
        "label": sample["label"],
        "class_name": sample.get("class_name"),
        "wnid": sample.get("wnid"),
        "payload_bits": sample["payload_bits"],
        "image": image.expand(3, -1, -1) if image.shape[0] == 1 else image,
    }


class HFSemanticSegmenter:
    """`AutoModelForSemanticSegmentation` (e.g. SegFormer) with its image processor. Called with
    one decoded uint8 image [3, H, W] and the mask's size (rows, columns), it returns logits
    [num_labels, rows, columns]: the model's output resized bilinearly to the mask."""

    def __init__(self, spec: str, device: torch.device):
        self.model, self.processor = _load("SemanticSegmentation", spec)
        self.model.to(device)
        self.device = device
        self.num_labels = int(self.model.config.num_labels)

    def __call__(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        inputs = self.processor(images=[image.cpu()], return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
            return torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0].cpu()
