"""Hugging Face task models for `lossyds eval --model hf:ID_OR_PATH`, each with its own processor.

Models load from a local folder (`save_pretrained`) or the user's Hugging Face cache, never from
the network (`local_files_only`). Image classification maps the model's `id2label` onto the
dataset's classes by name (the samples' `class_name`, or the ImageNet `wnid`), so an ImageNet
model scores a build of any subset of the 1000 classes, and a Beans or X-ray model its own
labels; it falls back to equal integer ids only where the dataset names no classes. Speech
recognition (Whisper-class sequence-to-sequence models) transcribes 30 s windows in batches and
offers Whisper's English text normaliser beside the raw text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from .base import TaskModel


def _load(kind: str, spec: str, processor_class: str = "AutoImageProcessor") -> tuple[Any, Any]:
    """(model, processor) for `hf:ID_OR_PATH`, from the folder or the Hugging Face cache: the
    model as `AutoModelFor{kind}`, its processor as `transformers.{processor_class}`."""
    try:
        import transformers
    except ImportError:
        raise UsageError("--model hf:... needs transformers: pip install 'lossyds[hf]'.") from None
    auto_model = getattr(transformers, f"AutoModelFor{kind}")
    try:
        model, loading = auto_model.from_pretrained(spec, local_files_only=True, output_loading_info=True)
        processor = getattr(transformers, processor_class).from_pretrained(spec, local_files_only=True)
    except OSError as exc:
        raise UsageError(
            f"hf:{spec} is neither a model folder nor in the Hugging Face cache (HF_HOME): fetch it where there is a "
            f"network (huggingface-cli download {spec}) or pass the folder save_pretrained wrote ({exc.__class__.__name__})."
        ) from None
    except ValueError as exc:  # transformers' own message names every architecture it knows: its first line says enough
        raise UsageError(
            f"hf:{spec} is not a model AutoModelFor{kind} loads ({str(exc).splitlines()[0].rstrip('.')})."
        ) from None
    if loading.get("missing_keys"):  # transformers would run these weights randomly initialised
        missing = sorted(loading["missing_keys"])
        raise UsageError(
            f"hf:{spec} lacks {len(missing)} of the weights AutoModelFor{kind} needs ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}), which would run randomly initialised: use a model trained for this task."
        )
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
    decoded uint8 images [3, H, W] (any sizes) and each one's mask size (rows, columns), it
    returns per image logits [num_labels, rows, columns]: the model's output resized bilinearly
    to the mask. The images go through the model as one batch where the processor brings them
    to one size (SegFormer's does), else one at a time."""

    def __init__(self, spec: str, device: torch.device):
        self.model, self.processor = _load("SemanticSegmentation", spec)
        self.model.to(device)
        self.device = device
        self.num_labels = int(self.model.config.num_labels)

    def _logits(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        inputs = self.processor(images=[image.cpu() for image in images], return_tensors="pt")
        with torch.no_grad():
            return self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits

    def __call__(self, images: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        processed = self.processor(images=[image.cpu() for image in images])["pixel_values"]
        if len({tuple(np.shape(pixels)) for pixels in processed}) == 1:  # one size: one batch
            outputs = list(self._logits(images))
        else:  # a processor that keeps each image's size: one at a time
            outputs = [self._logits([image])[0] for image in images]
        with torch.no_grad():
            return [
                torch.nn.functional.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0].cpu()
                for logits, size in zip(outputs, sizes)
            ]

    def native_labels(self, images: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Label maps int64 [rows, columns], one per image, the way the MPQ study scored ADE20k:
        each image at its own size through the processor (`do_resize=False`), the argmax at the
        model's output resolution (1/4 of the input for SegFormer), then that integer label map
        resized to the mask by torchvision's `transforms.Resize` (bilinear, antialias), which
        interpolates the class ids themselves and rounds them: at a boundary between two classes
        it may write a third. The argmax-then-resize of ids is kept because that is what is
        being reproduced; the default resizes the logits instead."""
        from torchvision import transforms

        labels = []
        for image, size in zip(images, sizes):
            inputs = self.processor(images=[image.cpu()], return_tensors="pt", do_resize=False)
            with torch.no_grad():
                logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
            prediction = logits.argmax(dim=1)[0].cpu()
            labels.append(transforms.Resize(tuple(size), antialias=True)(prediction[None, None])[0, 0])
        return labels


class HFSpeechRecognizer:
    """`AutoModelForSpeechSeq2Seq` (Whisper and its kind) with its `AutoProcessor`. Called with
    decoded float32 audio [channels, frames] and its rate in Hz, it returns the transcript as
    the model writes it (case and punctuation kept); `transcribe` does several clips at once.

    Each clip is mixed to mono and resampled to the feature extractor's rate; a clip longer
    than the model's window (30 s for Whisper) is cut into consecutive windows, each
    transcribed on its own, their texts joined with a space. Windows of all clips in a call
    go through `generate` `batch_size` at a time. `language` and `task` fix the decoder's
    prompt (None: the model's own default, e.g. language detection, as the `transformers` ASR
    pipeline runs it when given no language: eval's `language: detect`); an English-only model
    takes no prompt and accepts only English transcription."""

    def __init__(
        self,
        spec: str,
        device: torch.device,
        *,
        language: str | None = "en",
        task: str | None = "transcribe",
        batch_size: int = 8,
    ):
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        self.model, self.processor = _load("SpeechSeq2Seq", spec, "AutoProcessor")
        self.model.to(device)
        self.device = device
        self.batch_size = batch_size
        self.feature_extractor = self.processor.feature_extractor
        self.tokenizer = self.processor.tokenizer
        self.rate = int(self.feature_extractor.sampling_rate)
        self.window = int(self.feature_extractor.n_samples)  # frames at self.rate the encoder takes at once
        self.generate_kwargs = self._prompt(spec, language, task)
        spelling = getattr(self.tokenizer, "english_spelling_normalizer", None)
        self.spelling_map = bool(spelling)  # False: the folder has no normalizer.json
        self._normalizer = EnglishTextNormalizer(spelling or {})

    def _prompt(self, spec: str, language: str | None, task: str | None) -> dict[str, str]:
        """generate's language / task arguments. Whisper's generate refuses both on an
        English-only model (its prompt has no language or task token), so there English
        transcription passes nothing and anything else is refused."""
        kwargs = {k: v for k, v in (("language", language), ("task", task)) if v is not None}
        if getattr(self.model.generation_config, "is_multilingual", True):
            return kwargs
        if (language or "en").lower() in ("en", "english") and (task or "transcribe") == "transcribe":
            return {}
        raise UsageError(f"hf:{spec} is an English-only model: it cannot {task} {language} speech.")

    def __call__(self, audio: np.ndarray, rate: int) -> str:
        return self.transcribe([(audio, rate)])[0]

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        """float32 [channels, frames] at `rate` Hz -> mono float32 [frames] pieces at the
        model's rate: as few as hold it in windows of at most 30 s, all of one length (the last
        a few frames shorter), so no piece is a sliver the model would invent text for (an empty
        clip is one empty piece)."""
        from ..codecs._audio import resample

        mono = resample(np.asarray(audio, dtype=np.float32).mean(axis=0, keepdims=True), rate, self.rate)[0]
        count = max(1, math.ceil(len(mono) / self.window))
        size = max(1, math.ceil(len(mono) / count))
        return [mono[start : start + size] for start in range(0, max(len(mono), 1), size)]

    def transcribe(self, clips: Sequence[tuple[np.ndarray, int]]) -> list[str]:
        """[(float32 [channels, frames], rate in Hz), ...] -> one transcript per clip.

        Windows are fixed and do not overlap: each `generate` call stays short-form, so the
        windows of short and long clips batch together, and the text is what the model writes
        for each window. Whisper's own long-form decoding (seeking by predicted timestamps)
        needs timestamp prediction and runs clip by clip, and the ASR pipeline's overlapping
        chunks are merged by a heuristic transformers calls experimental for seq2seq models; a
        word cut by a window's edge may be lost or split here."""
        pieces, owners = [], []
        for index, (audio, rate) in enumerate(clips):
            for piece in self.windows(audio, rate):
                pieces.append(piece)
                owners.append(index)
        texts: list[str] = []
        for start in range(0, len(pieces), self.batch_size):
            texts += self._generate(pieces[start : start + self.batch_size])
        parts: list[list[str]] = [[] for _ in clips]
        for owner, text in zip(owners, texts):
            if text.strip():
                parts[owner].append(text.strip())
        return [" ".join(texts_of_clip) for texts_of_clip in parts]

    def _generate(self, pieces: list[np.ndarray]) -> list[str]:
        """Mono float32 [frames] pieces at the model's rate, each within one window -> the
        decoded text of each (special tokens dropped)."""
        inputs = self.feature_extractor(
            pieces, sampling_rate=self.rate, return_tensors="pt", return_attention_mask=True
        )
        features = inputs["input_features"].to(self.device, dtype=self.model.dtype)
        with torch.no_grad():
            ids = self.model.generate(
                features, attention_mask=inputs["attention_mask"].to(self.device), **self.generate_kwargs
            )
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def normalize(self, text: str) -> str:
        """Whisper's English text normaliser with the spelling map of the tokenizer's
        normalizer.json (an empty map where it has none: see `spelling_map`)."""
        return self._normalizer(text)


def load(
    argument: str, task: str, device: torch.device, batch: int, *, language: str = "en", native_size: bool = False
) -> Any:
    """The adapter `task`'s run function calls, for the model at `argument`. `language` (asr): the
    language the decoder is told, "detect" for none; `native_size` (segmentation): see
    `HFSemanticSegmenter.native_labels` (both are eval options, lossyds.eval.options)."""
    if task == "asr":
        from .asr import Recognizer

        spoken = None if language == "detect" else language
        recognizer = HFSpeechRecognizer(
            argument, device, language=spoken, task=None if spoken is None else "transcribe", batch_size=batch
        )
        return Recognizer(recognizer.transcribe, batch=batch, whisper=recognizer)
    if task == "classification":
        from .classification import Classifier

        classifier = HFImageClassifier(argument, device)
        return Classifier(classifier, labels=classifier)
    from .segmentation import Segmenter

    segmenter = HFSemanticSegmenter(argument, device)
    if native_size:
        return Segmenter(segmenter.native_labels, batch=1, num_labels=segmenter.num_labels, labels=True)
    return Segmenter(
        lambda images, sizes: [logits[None] for logits in segmenter(images, sizes)],
        batch=batch,
        num_labels=segmenter.num_labels,
    )


def missing(argument: str) -> str | None:
    """None where `hf:argument` is a model folder or is in this machine's Hugging Face cache
    (HF_HUB_CACHE, or HF_HOME/hub), else where to put it: its folder in that cache."""
    from pathlib import Path

    if Path(argument).expanduser().is_dir():
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return "hf: models need transformers and huggingface_hub: pip install 'lossyds[hf]'"
    if "/" in argument.strip("/") and not argument.startswith((".", "/", "~")):
        if isinstance(try_to_load_from_cache(argument, "config.json"), str):
            return None
        folder = Path(constants.HF_HUB_CACHE) / f"models--{argument.replace('/', '--')}"
        return (
            f"hf:{argument} is not in the Hugging Face cache: run `huggingface-cli download {argument}` where there "
            f"is a network, with HF_HOME pointing at the same cache, or copy that cache's folder to {folder}"
        )
    return f"hf:{argument} is not a model folder (no such folder)"


MODEL = TaskModel(
    name="hf",
    tasks=("asr", "classification", "segmentation"),
    load=load,
    spelling="hf:ID_OR_PATH",
    summary="a Hugging Face model (Whisper-class speech model, image classifier, SegFormer-class segmenter) "
    "with its own processor, by id from the local cache or a saved folder",
    transforms={"classification": hf_classification_input},
    missing=missing,
)
