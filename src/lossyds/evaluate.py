"""`lossyds eval DIR --task ...`: a task model on the decoded samples, scored, with the true bits beside it.

Tasks and models:
- asr: word error rate (jiwer) of `pocketsphinx` (offline: its English model ships in the
  wheel) or `module:function` (audio float32 [C, T], rate -> text);
- classification: top-1 / top-5 of `torchvision:NAME` (pretrained weights from the user's
  torch cache; missing weights are an error) or `module:function` (uint8 [N, 3, 224, 224]
  -> logits [N, classes]);
- segmentation: Cityscapes mIoU over the 19 train ids (255 ignored) of `module:function`
  (uint8 [1, 3, H, W] -> logits [1, 19, H, W]);
- separation: SDR per stem of `oracle-irm` (ideal ratio masks from the reference stems
  applied to the decoded mixture: what the codec left recoverable, no model needed) or
  `module:function` (mixture [C, T], rate -> {stem: [C, T]}).
Results go to DIR/eval-TASK.json with the dataset's bits per sample beside every score.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import UsageError
from .loader import LossyDataset
from .manifest import write_json_atomic

TASKS = ("asr", "classification", "segmentation", "separation")


def load_callable(spec: str) -> Callable:
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--model {spec!r} is not an importable module:function ({exc}).") from exc


def bits_of(dataset: LossyDataset) -> dict[str, Any]:
    bits = dataset.manifest["bits"]
    keys = ("per_sample_mean", "bpp") if dataset.modality == "image" else ("per_sample_mean", "kbps", "bits_per_audio_sample")
    return {k: bits[k] for k in keys if k in bits}


# -- ASR ---------------------------------------------------------------------------------


def pocketsphinx_recognizer() -> Callable[[np.ndarray, int], str]:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise UsageError("asr with pocketsphinx needs it installed: pip install pocketsphinx jiwer") from exc
    from .codecs._audio import resample

    decoder = Decoder(samprate=16000, loglevel="FATAL")

    def recognize(audio: np.ndarray, rate: int) -> str:
        mono = resample(audio.mean(axis=0, keepdims=True).astype(np.float32), rate, 16000)[0]
        pcm = (np.clip(mono, -1, 1) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    return recognize


def normalize_text(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split())


def eval_asr(dataset: LossyDataset, model: str) -> dict[str, Any]:
    import jiwer

    recognize = pocketsphinx_recognizer() if model == "pocketsphinx" else load_callable(model)
    references, hypotheses, per_sample = [], [], []
    for sample in dataset:
        if not isinstance(sample.get("text"), str):
            raise UsageError(f"sample {sample['key']!r} has no transcript; asr needs a dataset with text targets.")
        reference = normalize_text(sample["text"])
        hypothesis = normalize_text(recognize(sample["audio"].numpy(), sample["sample_rate"]))
        references.append(reference)
        hypotheses.append(hypothesis)
        per_sample.append({"key": sample["key"], "reference": reference, "hypothesis": hypothesis, "payload_bits": sample["payload_bits"]})
    return {"wer": float(jiwer.wer(references, hypotheses)), "samples": per_sample}


# -- classification ------------------------------------------------------------------------


def torchvision_classifier(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        network = torchvision.models.get_model(name, weights=None)
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():
            raise UsageError(f"pretrained weights for torchvision:{name} are not cached; put {Path(weights.url).name} in {cached.parent} (from {weights.url}).")
        network.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
    except ValueError as exc:
        raise UsageError(f"torchvision has no model {name!r}.") from exc
    network.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def classify(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network((images.float() / 255 - mean) / std)

    return classify


def center_crop_224(image: torch.Tensor) -> torch.Tensor:
    """uint8 [C, H, W] -> uint8 [3, 224, 224]: shorter side to 256, centre crop (the ImageNet protocol)."""
    import torchvision.transforms.v2.functional as F

    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return F.center_crop(F.resize(image, 256, antialias=True), [224, 224])


def eval_classification(dataset: LossyDataset, model: str, batch: int = 32) -> dict[str, Any]:
    classify = torchvision_classifier(model.split(":", 1)[1]) if model.startswith("torchvision:") else load_callable(model)
    top1 = top5 = total = 0
    images, labels = [], []

    def flush() -> None:
        nonlocal top1, top5, total
        logits = classify(torch.stack(images))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        target = torch.tensor(labels)
        top1 += int((best[:, 0] == target).sum())
        top5 += int((best == target[:, None]).any(dim=1).sum())
        total += len(labels)
        images.clear()
        labels.clear()

    for sample in dataset:
        if not isinstance(sample.get("label"), int):
            raise UsageError(f"sample {sample['key']!r} has no integer label.")
        images.append(center_crop_224(sample["image"]))
        labels.append(sample["label"])
        if len(images) == batch:
            flush()
    if images:
        flush()
    return {"top1": top1 / total, "top5": top5 / total, "count": total}


# -- segmentation ---------------------------------------------------------------------------


def eval_segmentation(dataset: LossyDataset, model: str, classes: int = 19) -> dict[str, Any]:
    from .builders.cityscapes import train_ids

    segment = load_callable(model)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    for sample in dataset:
        if "mask" not in sample:
            raise UsageError(f"sample {sample['key']!r} has no mask; segmentation needs Cityscapes-style label maps.")
        target = train_ids(sample["mask"][0]).long()
        with torch.no_grad():
            prediction = segment(sample["image"][None].expand(-1, 3, -1, -1) if sample["image"].shape[0] == 1 else sample["image"][None])[0].argmax(0)
        valid = target != 255
        confusion += torch.bincount(target[valid] * classes + prediction[valid], minlength=classes * classes).view(classes, classes)
    intersection = confusion.diag().float()
    union = confusion.sum(0).float() + confusion.sum(1).float() - intersection
    present = union > 0
    iou = (intersection[present] / union[present])
    return {"miou": float(iou.mean()) if present.any() else float("nan"), "iou_per_class": {int(c): float(v) for c, v in zip(present.nonzero().flatten(), iou)}}


# -- separation -----------------------------------------------------------------------------


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain signal-to-distortion ratio in dB (not BSSEval's projection-based SDR)."""
    noise = reference - estimate
    return 10 * math.log10((np.sum(reference**2) + 1e-12) / (np.sum(noise**2) + 1e-12))


def oracle_irm(mixture: np.ndarray, stems: dict[str, np.ndarray], n_fft: int = 2048) -> dict[str, np.ndarray]:
    """Ideal ratio masks |S_i| / sum |S_j| from the reference stems, applied to the (decoded) mixture."""
    window = torch.hann_window(n_fft)
    spec = lambda x: torch.stft(torch.from_numpy(np.ascontiguousarray(x)), n_fft, n_fft // 4, window=window, return_complex=True)  # noqa: E731
    mix = spec(mixture)
    magnitudes = {name: spec(stem).abs() for name, stem in stems.items()}
    total = sum(magnitudes.values()) + 1e-8
    return {name: torch.istft(mix * (magnitude / total), n_fft, n_fft // 4, window=window, length=mixture.shape[-1]).numpy() for name, magnitude in magnitudes.items()}


def eval_separation(dataset: LossyDataset, model: str) -> dict[str, Any]:
    separate = None if model == "oracle-irm" else load_callable(model)
    scores: dict[str, list[float]] = {}
    for sample in dataset:
        stems = {name: tensor.numpy() for name, tensor in (sample.get("stems") or {}).items()}
        if not stems:
            raise UsageError(f"sample {sample['key']!r} has no reference stems.")
        mixture = sample["audio"].numpy()
        estimates = oracle_irm(mixture, stems) if separate is None else {k: np.asarray(v) for k, v in separate(mixture, sample["sample_rate"]).items()}
        for name, reference in stems.items():
            scores.setdefault(name, []).append(sdr(reference, estimates[name]))
    per_stem = {name: float(np.mean(values)) for name, values in scores.items()}
    return {"sdr": float(np.mean(list(per_stem.values()))), "sdr_per_stem": per_stem, "sdr_kind": "plain SDR (not BSSEval)"}


def evaluate(directory: str | Path, task: str, model: str | None = None) -> dict[str, Any]:
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}.")
    defaults = {"asr": "pocketsphinx", "separation": "oracle-irm"}
    model = model or defaults.get(task)
    if model is None:
        raise UsageError(f"--task {task} needs --model (torchvision:NAME or module:function).")
    dataset = LossyDataset(directory)
    runner = {"asr": eval_asr, "classification": eval_classification, "segmentation": eval_segmentation, "separation": eval_separation}[task]
    scores = runner(dataset, model)
    result = {
        "task": task,
        "model": model,
        "dataset": dataset.manifest["dataset"]["name"],
        "split": dataset.manifest["dataset"]["split"],
        "codec": dataset.manifest["codec"]["name"],
        "codec_params": dataset.manifest["codec"]["params"],
        "num_samples": dataset.manifest["num_samples"],
        "bits": bits_of(dataset),
        **scores,
    }
    if Path(str(directory)).is_dir():
        write_json_atomic(Path(directory) / f"eval-{task}.json", result)
    return result
