"""`lossyds eval DIR --task ...`: a task model on the decoded samples, scored, with the true bits beside it.

Tasks and models:
- asr: word error rate (jiwer) of `pocketsphinx` (offline: its English model ships in the
  wheel), `hf:ID_OR_PATH` (a Whisper-class speech model with its own processor, from a
  folder or the user's Hugging Face cache; also scored with Whisper's English normaliser)
  or `module:function` (audio float32 [C, T], rate -> text);
- classification: top-1 / top-5 of `hf:ID_OR_PATH` (a Hugging Face image classifier with
  its own processor, from a folder or the user's Hugging Face cache; its id2label mapped to
  the dataset's classes by name), `torchvision:NAME` (pretrained weights from the user's
  torch cache; missing weights are an error) or `module:function` (uint8 [N, 3, 224, 224]
  -> logits [N, classes]);
- segmentation: mIoU over Cityscapes' 19 train ids (255 ignored) or, for any other dataset,
  ADE20k's 150 classes (0 ignored) of `hf:ID_OR_PATH` (e.g. SegFormer, its own processor,
  logits resized to the mask) or `module:function` (uint8 [1, 3, H, W] -> logits
  [1, classes, H, W]);
- separation: SDR per stem and BSSEval v4 of `oracle-irm` (ideal ratio masks from the
  reference stems applied to the decoded mixture: what the codec left recoverable, no model
  needed), `demucs:NAME_OR_PATH` (a pretrained Demucs from torch hub's cache, or a
  checkpoint; `demucs_models`) or `module:function` (mixture [C, T], rate -> {stem: [C, T]}).
Results go to DIR/eval-TASK.json with the dataset's bits per sample beside every score.

Decoding runs in parallel, the recommended way (docs/loading.md): image codecs whose
decoders release the GIL (JPEG, WebP, AVIF, PNG) in `cores` decode threads, the others
(audio, neural) in `cores` DataLoader worker processes; a neural codec's synthesis may
run batched on `decode_device`. The task model runs in this process on `device`.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UsageError
from .load import LossyDataset, decode_threads_for, decoded_samples, default_cores
from .manifest import load_manifest, write_json_atomic
from .task_model_checks import call, failure, load_callable, logits_of, masks_of, stems_of, texts_of

TASKS = ("asr", "classification", "segmentation", "separation")


def bits_of(dataset: LossyDataset) -> dict[str, Any]:
    bits = dataset.manifest["bits"]
    keys = (
        ("per_sample_mean", "bpp")
        if dataset.modality == "image"
        else ("per_sample_mean", "kbps", "bits_per_audio_sample")
    )
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


def asr_recognizer(
    model: str, device: torch.device, batch: int = 8
) -> tuple[Callable[[list[tuple[np.ndarray, int]]], list[str]], Any]:
    """(transcribe, hf) for --model: transcribe maps [(float32 [C, T], rate in Hz), ...] to one
    text per clip; hf is the `HFSpeechRecognizer` behind it for `hf:` (on `device`, `batch`
    30 s windows per generate call), else None (pocketsphinx or a module:function, one clip at
    a time on the CPU)."""
    if model.startswith("hf:"):
        from .hf_models import HFSpeechRecognizer

        hf = HFSpeechRecognizer(model.split(":", 1)[1], device, batch_size=batch)
        return hf.transcribe, hf
    recognize = pocketsphinx_recognizer() if model == "pocketsphinx" else load_callable(model)
    return (lambda clips: [recognize(audio, rate) for audio, rate in clips]), None


def eval_asr(samples: Iterator[dict[str, Any]], model: str, device: torch.device, batch: int = 8) -> dict[str, Any]:
    """Word error rate over all utterances (`asr_recognizer`: an `hf:` model gets `batch`
    clips at a time on `device`, the others float32 numpy [C, T] and the rate on the CPU).
    `wer` compares `normalize_text` of both sides, for every model alike; `wer_raw` the texts
    as the dataset and the model give them; for `hf:`, `wer_whisper` compares Whisper's
    English normaliser of both (with the tokenizer's spelling map where it has one:
    `whisper_normalizer_spelling_map`). Per sample: key, normalised and raw reference and
    hypothesis."""
    import jiwer

    transcribe, hf = asr_recognizer(model, device, batch)
    per_sample: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        keys = [s["key"] for s in pending]
        clips = [(s["audio"].cpu().numpy(), s["sample_rate"]) for s in pending]
        texts = texts_of(model, keys, call(model, keys, transcribe, clips))
        for sample, text in zip(pending, texts):
            per_sample.append(
                {
                    "key": sample["key"],
                    "reference": normalize_text(sample["text"]),
                    "hypothesis": normalize_text(text),
                    "reference_raw": sample["text"],
                    "hypothesis_raw": text,
                    "payload_bits": sample["payload_bits"],
                }
            )
        pending.clear()

    for sample in samples:
        if not isinstance(sample.get("text"), str):
            raise UsageError(f"sample {sample['key']!r} has no transcript; asr needs a dataset with text targets.")
        pending.append(sample)
        if len(pending) == (batch if hf is not None else 1):
            flush()
    if pending:
        flush()
    if not per_sample:
        raise UsageError("no samples to evaluate.")

    def wer(side: str, normalize: Callable[[str], str] = lambda text: text) -> float:
        return float(
            jiwer.wer(
                [normalize(s[f"reference{side}"]) for s in per_sample],
                [normalize(s[f"hypothesis{side}"]) for s in per_sample],
            )
        )

    result: dict[str, Any] = {"wer": wer(""), "wer_raw": wer("_raw")}
    if hf is not None:
        result["wer_whisper"] = wer("_raw", hf.normalize)
        result["whisper_normalizer_spelling_map"] = hf.spelling_map
    return result | {"samples": per_sample}


# -- classification ------------------------------------------------------------------------


def torchvision_classifier(name: str, device: torch.device | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    import torchvision

    from .weights import torch_hub_checkpoints

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


def classification_transform(model: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The decode-side transform a classifier needs: hf: models get whole images, others 224x224 crops."""
    if model.startswith("hf:"):
        from .hf_models import hf_classification_input

        return hf_classification_input
    return classification_input


def eval_classification(
    samples: Iterator[dict[str, Any]], model: str, device: torch.device, batch: int = 32
) -> dict[str, Any]:
    """Top-1 / top-5 over samples already passed through `classification_input` (uint8
    [N, 3, 224, 224] to a torchvision or module:function model on `device`) or, for `hf:`,
    `hf_classification_input` (whole images to the model's own processor; its labels mapped to
    the dataset's by name, see hf_models). Per sample: key, label, the top-5 predictions in
    the model's label order, whether the label is first and among them."""
    hf = None
    if model.startswith("hf:"):
        from .hf_models import HFImageClassifier

        hf = HFImageClassifier(model.split(":", 1)[1], device)
        classify: Callable = hf
    elif model.startswith("torchvision:"):
        classify = torchvision_classifier(model.split(":", 1)[1], device)
    else:
        classify = load_callable(model)
    per_sample: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        images, keys = [s["image"] for s in pending], [s["key"] for s in pending]
        logits = logits_of(model, keys, call(model, keys, classify, images if hf else torch.stack(images).to(device)))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        for sample, top in zip(pending, best.tolist()):
            target = sample["label"] if hf is None else hf.model_index(sample)
            record = {"key": sample["key"], "label": sample["label"], "top5": top}
            if hf is not None:
                record["model_label"] = target
                record["top5_names"] = [hf.labels[i] for i in top]
            record.update(
                {"correct": top[0] == target, "in_top5": target in top, "payload_bits": sample["payload_bits"]}
            )
            per_sample.append(record)
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


# -- segmentation ---------------------------------------------------------------------------


def segmentation_targets(mask: torch.Tensor, dataset: str) -> tuple[torch.Tensor, int]:
    """(class ids [H, W] with 255 ignored, number of classes) of a sample's label map: Cityscapes
    label ids to its 19 train ids; any other dataset as ADE20k (scene_parse_150) stores them,
    0 ignored and value v the class v - 1 of 150."""
    if dataset == "cityscapes":
        from .sources.cityscapes import train_ids

        return train_ids(mask).long(), 19
    mask = mask.long()
    return torch.where(mask == 0, torch.full_like(mask, 255), mask - 1), 150


def eval_segmentation(
    samples: Iterator[dict[str, Any]], model: str, device: torch.device, dataset: str = "cityscapes", batch: int = 8
) -> dict[str, Any]:
    """mIoU from one confusion matrix over the dataset's classes (`segmentation_targets`). An
    `hf:` model gets the whole images through its own processor, `batch` at a time, its logits
    resized to each mask; a module:function model gets one uint8 [1, 3, H, W] on `device` and
    returns logits [1, classes, H, W] at the mask's size. Per sample: key and pixel accuracy."""
    segmenter = None
    if model.startswith("hf:"):
        from .hf_models import HFSemanticSegmenter

        segmenter = HFSemanticSegmenter(model.split(":", 1)[1], device)
    else:
        segment = load_callable(model)
    confusion: torch.Tensor | None = None
    per_sample: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = []  # (sample, target, image)
    classes = 0

    def flush() -> None:
        nonlocal confusion
        keys, sizes = [s["key"] for s, _, _ in pending], [tuple(target.shape) for _, target, _ in pending]
        if segmenter is not None:
            found = call(model, keys, segmenter, [image for _, _, image in pending], sizes)
            outputs = masks_of(model, keys, [logits[None] for logits in found], sizes, classes)
        else:
            with torch.no_grad():
                found = [call(model, [s["key"]], segment, image[None].to(device)) for s, _, image in pending]
            outputs = [logits.cpu() for logits in masks_of(model, keys, found, sizes, classes)]
        for (sample, target, _), logits in zip(pending, outputs):
            prediction = logits.argmax(0)
            if confusion is None:
                confusion = torch.zeros(classes, classes, dtype=torch.long)
            valid = target != 255
            if valid.any() and int(target[valid].max()) >= classes:
                raise UsageError(f"sample {sample['key']!r} has a class id beyond the {classes} classes.")
            confusion += torch.bincount(target[valid] * classes + prediction[valid], minlength=classes * classes).view(
                classes, classes
            )
            accuracy = float((prediction[valid] == target[valid]).float().mean()) if valid.any() else float("nan")
            per_sample.append(
                {"key": sample["key"], "pixel_accuracy": accuracy, "payload_bits": sample["payload_bits"]}
            )
        pending.clear()

    for sample in samples:
        if "mask" not in sample:
            raise UsageError(f"sample {sample['key']!r} has no mask; segmentation needs label maps.")
        target, classes = segmentation_targets(sample["mask"][0].cpu(), dataset)
        if segmenter is not None and segmenter.num_labels != classes:
            raise UsageError(
                f"the model has {segmenter.num_labels} classes and this {dataset} build {classes}: "
                "cannot score it on this dataset's labels."
            )
        image = sample["image"].expand(3, -1, -1) if sample["image"].shape[0] == 1 else sample["image"]
        pending.append((sample, target, image))
        if len(pending) == (batch if segmenter is not None else 1):
            flush()
    if pending:
        flush()
    if not per_sample or confusion is None:
        raise UsageError("no samples to evaluate.")
    intersection = confusion.diag().float()
    union = confusion.sum(0).float() + confusion.sum(1).float() - intersection
    present = union > 0
    iou = intersection[present] / union[present]
    return {
        "miou": float(iou.mean()) if present.any() else float("nan"),
        "iou_per_class": {int(c): float(v) for c, v in zip(present.nonzero().flatten(), iou)},
        "classes": classes,
        "samples": per_sample,
    }


# -- separation -----------------------------------------------------------------------------


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain signal-to-distortion ratio in dB (not BSSEval's projection-based SDR)."""
    noise = reference - estimate
    return 10 * math.log10((np.sum(reference**2) + 1e-12) / (np.sum(noise**2) + 1e-12))


def oracle_irm(mixture: np.ndarray, stems: dict[str, np.ndarray], n_fft: int = 2048) -> dict[str, np.ndarray]:
    """Ideal ratio masks |S_i| / sum |S_j| from the reference stems, applied to the (decoded) mixture."""
    window = torch.hann_window(n_fft)

    def spec(x):
        return torch.stft(
            torch.from_numpy(np.ascontiguousarray(x)), n_fft, n_fft // 4, window=window, return_complex=True
        )  # noqa: E731

    mix = spec(mixture)
    magnitudes = {name: spec(stem).abs() for name, stem in stems.items()}
    total = sum(magnitudes.values()) + 1e-8
    return {
        name: torch.istft(mix * (magnitude / total), n_fft, n_fft // 4, window=window, length=mixture.shape[-1]).numpy()
        for name, magnitude in magnitudes.items()
    }


# BSSEval v4 framing of the reference study (and SiSEC 2018): 2 s windows every 1.5 s.
BSS_WINDOW_SECONDS = 2.0
BSS_HOP_SECONDS = 1.5
BSS_METRICS = ("SDR", "SIR", "SAR", "ISR")


def bss_eval_v4(
    stems: dict[str, np.ndarray], estimates: dict[str, np.ndarray], rate: int
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """museval's BSSEval v4 image metrics in dB, per stem: ({stem: {SDR, SIR, SAR, ISR}}, each the
    median over 2 s frames taken every 1.5 s, and {stem: SDR of every frame}). Frames where a
    reference is silent are NaN in museval: left out of the medians and the frame lists, as the
    reference study left them out of its mean.
    A clip shorter than one window is one frame.
    stems and estimates: float32 [channels, frames] at `rate` Hz, the same stem names."""
    import museval

    names = list(stems)
    references = np.stack([stems[name].T for name in names])  # [stems, frames, channels]
    estimated = np.stack([estimates[name][..., : references.shape[1]].T for name in names])
    window = min(int(BSS_WINDOW_SECONDS * rate), references.shape[1])
    values = museval.evaluate(references, estimated, win=window, hop=int(BSS_HOP_SECONDS * rate))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames: the median is NaN
        medians = {
            name: {metric: float(np.nanmedian(table[i])) for metric, table in zip(("SDR", "ISR", "SIR", "SAR"), values)}
            for i, name in enumerate(names)
        }
    frames = {name: [float(v) for v in values[0][i] if not np.isnan(v)] for i, name in enumerate(names)}
    return medians, frames


def separator_for(model: str, device: torch.device) -> Callable[[np.ndarray, int], dict[str, np.ndarray]] | None:
    """The separation model for --model: None for the oracle mask, a `DemucsSeparator` for
    demucs:NAME_OR_PATH (on `device`), else a module:function (on the CPU)."""
    if model == "oracle-irm":
        return None
    if model.startswith("demucs:"):
        from .demucs_models import DemucsSeparator

        return DemucsSeparator(model.split(":", 1)[1], device)
    return load_callable(model)


def eval_separation(samples: Iterator[dict[str, Any]], model: str, device: torch.device) -> dict[str, Any]:
    """Plain SDR per stem and, where museval is installed, BSSEval v4 (`bss_eval_v4`) per stem;
    the model (`separator_for`) gets the mixture as float32 numpy [C, T] and its rate. Per
    sample: key, SDR per stem, BSSEval per stem and its per-frame SDRs. Over samples: the mean
    plain SDR; BSSEval's median over tracks (SiSEC's aggregate) and, as the reference study
    aggregated it, the mean SDR over every non-NaN frame of every stem and track."""
    import importlib.util

    with_bss = importlib.util.find_spec("museval") is not None
    separate = separator_for(model, device)
    scores: dict[str, list[float]] = {}
    per_sample: list[dict[str, Any]] = []
    for sample in samples:
        stems = {name: tensor.cpu().numpy() for name, tensor in (sample.get("stems") or {}).items()}
        if not stems:
            raise UsageError(f"sample {sample['key']!r} has no reference stems.")
        mixture = sample["audio"].cpu().numpy()
        if hasattr(separate, "check_stems"):
            separate.check_stems(list(stems))
        estimates = (
            oracle_irm(mixture, stems)
            if separate is None
            else stems_of(
                model, sample["key"], call(model, [sample["key"]], separate, mixture, sample["sample_rate"]), stems
            )
        )
        sample_scores = {name: sdr(reference, estimates[name]) for name, reference in stems.items()}
        for name, value in sample_scores.items():
            scores.setdefault(name, []).append(value)
        record = {"key": sample["key"], "sdr_per_stem": sample_scores, "payload_bits": sample["payload_bits"]}
        if with_bss:
            record["bsseval_per_stem"], record["bsseval_sdr_frames"] = bss_eval_v4(
                stems, estimates, sample["sample_rate"]
            )
        per_sample.append(record)
    if not per_sample:
        raise UsageError("no samples to evaluate.")
    per_stem = {name: float(np.mean(values)) for name, values in scores.items()}
    result: dict[str, Any] = {
        "sdr": float(np.mean(list(per_stem.values()))),
        "sdr_per_stem": per_stem,
        "sdr_kind": "plain SDR (not BSSEval)",
        "bsseval": None,
        "bsseval_note": "museval is not installed: pip install 'lossyds[eval]'",
        "samples": per_sample,
    }
    if with_bss:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_stem_bss = {
                name: {
                    metric: float(np.nanmedian([s["bsseval_per_stem"][name][metric] for s in per_sample]))
                    for metric in BSS_METRICS
                }
                for name in per_stem
            }
        frames = [v for s in per_sample for values in s["bsseval_sdr_frames"].values() for v in values]
        result["bsseval"] = {
            "sdr": float(np.nanmean([values["SDR"] for values in per_stem_bss.values()])),
            "per_stem": per_stem_bss,
            "sdr_mean_over_frames": float(np.mean(frames)) if frames else float("nan"),
        }
        result["bsseval_note"] = (
            f"museval BSSEval v4, {BSS_WINDOW_SECONDS:g} s windows every {BSS_HOP_SECONDS:g} s: `sdr` is the mean over "
            "stems of the median over tracks of the median over frames (SiSEC); `sdr_mean_over_frames` is the mean "
            "over every frame of every stem and track, NaN frames left out (the reference study's aggregate)"
        )
    return result


def _timed(samples: Iterator[dict[str, Any]], clock: dict[str, float]) -> Iterator[dict[str, Any]]:
    """Pass samples through, noting in clock["first"] when the first one arrived."""
    for sample in samples:
        clock.setdefault("first", time.perf_counter())
        yield sample


def _counted(
    samples: Iterator[dict[str, Any]], total: int, progress: Callable[[int, int], None]
) -> Iterator[dict[str, Any]]:
    for done, sample in enumerate(samples, 1):
        progress(done, total)
        yield sample


def _device(name: str | torch.device | None, what: str) -> torch.device:
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"{what} {name!r} is not a torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{what} {name!r}: this torch sees no CUDA device.")
    return device


def evaluate(
    directory: str | Path,
    task: str,
    model: str | None = None,
    *,
    cores: int | None = None,
    device: str | torch.device | None = "cpu",
    decode_device: str | torch.device | None = None,
    limit: int | None = None,
    weights: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score `task` on the decoded samples of the build in `directory`.

    cores: decode threads (JPEG/WebP/AVIF/PNG) or DataLoader worker processes (the rest);
    None = one per core up to 8, 0 = decode in this thread. device: where the task model
    runs ("auto": CUDA when present). decode_device: a neural codec's synthesis, batched
    there (see open_dataset). limit: score only the first N samples the loader yields
    (recorded in the result as `limit`). weights: the neural codec's --weights, as at build.
    progress(done, total): called as samples reach the task model.
    Writes DIR/eval-TASK.json (local folders) and returns the same dict."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}.")
    defaults = {"asr": "pocketsphinx", "separation": "oracle-irm"}
    model = model or defaults.get(task)
    if model is None:
        raise UsageError(f"--task {task} needs --model (hf:ID_OR_PATH, torchvision:NAME or module:function).")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be >= 1 (got {limit}).")
    cores = default_cores() if cores is None else cores
    if cores < 0:
        raise UsageError(f"cores must be >= 0 (got {cores}).")
    model_device = _device(device, "device")
    dataset = LossyDataset(
        directory,
        weights=weights,
        decode_device=None if decode_device is None else _device(decode_device, "decode_device"),
        transform=classification_transform(model) if task == "classification" else None,
        decode_threads=decode_threads_for(load_manifest(directory)["codec"]["name"], cores),
        rank=0,
        world_size=1,
    )  # the whole dataset, under torchrun too
    runner = {
        "asr": eval_asr,
        "classification": eval_classification,
        "segmentation": eval_segmentation,
        "separation": eval_separation,
    }[task]
    samples = decoded_samples(dataset, cores)
    if limit is not None:
        samples = itertools.islice(samples, limit)
    if progress is not None:
        samples = _counted(samples, min(len(dataset), limit or len(dataset)), progress)
    clock: dict[str, float] = {"start": time.perf_counter()}
    if task == "segmentation":
        runner = functools.partial(eval_segmentation, dataset=dataset.manifest["dataset"]["name"])
    scores = runner(_timed(samples, clock), model, model_device)
    end = time.perf_counter()
    evaluated = len(scores["samples"])
    steady = end - clock.get("first", clock["start"])  # from the first sample on: model loading and warm-up left out
    result = {
        "task": task,
        "model": model,
        "dataset": dataset.manifest["dataset"]["name"],
        "split": dataset.manifest["dataset"]["split"],
        "codec": dataset.manifest["codec"]["name"],
        "codec_params": dataset.manifest["codec"]["params"],
        "num_samples": dataset.manifest["num_samples"],
        "num_evaluated": evaluated,
        "limit": limit,
        "bits": bits_of(dataset),
        "evaluated_bits_per_sample": sum(s["payload_bits"] for s in scores["samples"]) / evaluated,
        **scores,
        "run": {
            "device": str(model_device),
            "decode_device": None if dataset.decode_device is None else str(dataset.decode_device),
            "decode_threads": dataset.decode_threads,
            "workers": 0 if dataset.decode_threads > 1 else cores,
            "seconds": round(end - clock["start"], 3),
            "samples_per_second": round(evaluated / steady, 2) if steady > 0 else None,
        },
    }
    if Path(str(directory)).is_dir():
        write_json_atomic(Path(directory) / f"eval-{task}.json", result)
    return result
