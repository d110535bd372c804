"""`evaluate`: a task model on the decoded samples of a build, scored, with the true bits beside it.

Decoding runs in parallel, the recommended way (docs/loading.md): image codecs whose
decoders release the GIL (JPEG, WebP, AVIF, PNG) in `cores` decode threads, the others
(audio, neural) in `cores` DataLoader worker processes; a neural codec's synthesis may
run batched on `decode_device`. The task model runs in this process on `device`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..load import LossyDataset, decode_threads_for, decoded_samples, default_cores
from ..manifest import load_manifest, write_json_atomic
from .options import check_eval_options, excluded_keys, model_options
from .registry import load_model, model_help, model_kind
from .registry import task as task_declaration


def bits_of(dataset: LossyDataset) -> dict[str, Any]:
    bits = dataset.manifest["bits"]
    keys = (
        ("per_sample_mean", "bpp")
        if dataset.modality == "image"
        else ("per_sample_mean", "kbps", "bits_per_audio_sample")
    )
    return {k: bits[k] for k in keys if k in bits}


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


def _without(samples: Iterator[dict[str, Any]], excluded: set[str], seen: set[str]) -> Iterator[dict[str, Any]]:
    """The samples whose key is not in `excluded`; the excluded keys met are added to `seen`."""
    for sample in samples:
        if sample["key"] in excluded:
            seen.add(sample["key"])
            continue
        yield sample


def _keep_padding(dataset: LossyDataset) -> None:
    """Make the dataset's codec hand out its decoded images uncropped (eval's padded_output).
    Set before the decode workers start, so that they receive the codec set so."""
    codec = dataset.codec
    if not hasattr(codec, "output_padded"):
        raise UsageError(
            f"padded_output applies to learned image codecs, which pad before coding; {codec.name} does not."
        )
    codec.output_padded = True


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


def _dataset(
    directory: str | Path, transform: Any, cores: int, weights: str | None, decode_device: Any
) -> LossyDataset:
    """The whole build (under torchrun too), decoded on `cores` threads or workers."""
    manifest = load_manifest(directory)  # read once: the dataset takes it as it is
    return LossyDataset(
        directory,
        manifest=manifest,
        weights=weights,
        decode_device=None if decode_device is None else _device(decode_device, "decode_device"),
        transform=transform,
        decode_threads=decode_threads_for(manifest["codec"]["name"], cores),
        rank=0,
        world_size=1,
    )


def _record(
    dataset: LossyDataset, task_name: str, model: str, limit: int | None, scores: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """The eval-TASK.json of one run: what was scored, its bits, the scores and how it ran."""
    evaluated = len(scores["samples"])
    return {
        "task": task_name,
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
        "run": run,
    }


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
    result_name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score `task` on the decoded samples of the build in `directory`.

    cores: decode threads (JPEG/WebP/AVIF/PNG) or DataLoader worker processes (the rest);
    None = one per core up to 8, 0 = decode in this thread. device: where the task model
    runs ("auto": CUDA when present). decode_device: a neural codec's synthesis, batched
    there (see open_dataset). limit: score only the first N samples the loader yields
    (recorded in the result as `limit`). weights: the neural codec's --weights, as at build.
    progress(done, total): called as samples reach the task model. result_name: the result's
    file name in DIR (default eval-TASK.json; a study's runner names one per model and variant).
    options: the declared eval options (`lossyds.eval.options.EVAL_OPTIONS`: exclude,
    padded_output, native_size, language), recorded in the result under `options` when given.
    Writes DIR/eval-TASK.json (local folders) and returns the same dict."""
    declared = task_declaration(task)
    model = model or declared.default_model
    if model is None:
        raise UsageError(f"--task {task} needs --model ({model_help(task)}).")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be >= 1 (got {limit}).")
    cores = default_cores() if cores is None else cores
    if cores < 0:
        raise UsageError(f"cores must be >= 0 (got {cores}).")
    model_device = _device(device, "device")
    kind, _ = model_kind(model, task)
    checked = check_eval_options(task, kind.name, options)
    dataset = _dataset(directory, kind.transforms.get(task, declared.transform), cores, weights, decode_device)
    if checked.get("padded_output"):
        _keep_padding(dataset)
    excluded = excluded_keys(checked)
    seen: set[str] = set()
    samples = decoded_samples(dataset, cores)
    if excluded:
        samples = _without(samples, set(excluded), seen)
    total = len(dataset) - len(excluded)
    if limit is not None:
        samples = itertools.islice(samples, limit)
    if progress is not None:
        samples = _counted(samples, min(total, limit or total), progress)
    clock: dict[str, float] = {"start": time.perf_counter()}
    loaded = load_model(model, task, model_device, model_options(checked))
    scores = declared.run(_timed(samples, clock), model, loaded, dataset=dataset.manifest["dataset"]["name"])
    if limit is None and set(excluded) - seen:
        absent = sorted(set(excluded) - seen)
        raise UsageError(f"exclude names {len(absent)} key(s) this build does not hold: {', '.join(absent[:5])}.")
    end = time.perf_counter()
    evaluated = len(scores["samples"])
    steady = end - clock.get("first", clock["start"])  # from the first sample on: model loading and warm-up left out
    run = {
        "device": str(model_device),
        "decode_device": None if dataset.decode_device is None else str(dataset.decode_device),
        "decode_threads": dataset.decode_threads,
        "workers": 0 if dataset.decode_threads > 1 else cores,
        "seconds": round(end - clock["start"], 3),
        "samples_per_second": round(evaluated / steady, 2) if steady > 0 else None,
    }
    result = _record(dataset, task, model, limit, scores, run)
    if checked:  # only when given: a default evaluation's result is as it always was
        result["options"] = checked
    if Path(str(directory)).is_dir():
        write_json_atomic(Path(directory) / (result_name or f"eval-{task}.json"), result)
    return result
