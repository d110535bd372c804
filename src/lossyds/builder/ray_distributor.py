"""Build stage 2 on a Ray cluster: `lossyds build --distributor ray [--ray-address ADDRESS]`.

Only reading and encoding move to Ray. The build's own process (the driver) plans the build,
holds the output folder's lock (or the URL's claim), writes every shard and the journal, and
writes the manifest, exactly as a local build does; so the journal, resume, lock and
object-storage rules of a local build hold unchanged, and the shards and manifest are
byte-identical to a local build's (encoding is deterministic and results are taken in
source order, whichever node encoded them).

The samples go out as Ray tasks of a few samples each, a bounded window of them in flight
(memory does not grow with the dataset); Ray hands each task to whichever worker is free. A
task whose worker process or node dies is run again (MAX_RETRIES times), as is one that
raised an OSError (a network store's hiccup; a source file that cannot be read is a skipped
sample, as in a local build). A task asks Ray for one CPU, and for a share of a GPU when the
codec encodes on a CUDA device.

Every node must reach the source at the same path (a shared file system, or a URL source
such as a Hugging Face dataset) and have the same lossyds and codec packages installed.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

from .. import codecs
from ..codecs.base import Codec
from ..errors import LossydsError, UsageError
from ..sources import Source, SourceRef
from .encode import Encoded, Skipped, encode_batch, encode_sample, encode_settings

MAX_RETRIES = 3  # runs of a task beyond its first, after its worker died or its source read failed
TASK_SAMPLES = 16  # most source samples per task: amortises Ray's per-task cost (scheduling, object store)
WINDOW_PER_SLOT = 4  # tasks in flight per CPU of the cluster: enough to keep every worker busy
GPU_SHARE = 0.25  # a device-encoding task's share of a GPU: four tasks overlap one device's batches


def ray_module() -> Any:
    """The `ray` package, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--distributor ray needs the ray package: pip install 'lossyds[ray]'.") from None
    return ray


def connect(address: str | None, local_cpus: int) -> Any:
    """Ray, connected: to the runtime this process already joined, else to the cluster at
    `address` (host:port of its head, or "auto"), else to a new local runtime of `local_cpus` CPUs."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    settings: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **settings)
        else:
            ray.init(num_cpus=max(1, local_cpus), include_dashboard=False, **settings)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise LossydsError(f"cannot connect to {where}: {' '.join(str(exc).split())}") from None
    return ray


def check_reachable(address: str, timeout_seconds: float = 10) -> None:
    """Refuse a head at HOST:PORT that does not accept a connection within `timeout_seconds`.
    Written here because ray.init waits without bound for a head that does not answer."""
    host, colon, port = address.rpartition(":")
    if "://" in address or not colon or not port.isdigit():
        return  # "auto", or a ray:// client address: ray.init resolves and reports those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_seconds).close()
    except OSError as exc:
        raise LossydsError(
            f"cannot connect to the Ray cluster at {address} ({exc.strerror or exc}); start its head with "
            "`ray start --head`, or leave out --ray-address to start a local Ray runtime."
        ) from None


def task_resources(device: str) -> dict[str, float]:
    """What one encoding task asks Ray for: a CPU, and a share of a GPU when it encodes on CUDA."""
    resources: dict[str, float] = {"num_cpus": 1}
    if device.startswith("cuda"):
        resources["num_gpus"] = GPU_SHARE
    return resources


def task_samples(count: int, slots: int, codec: Codec, encode_batch_size: int) -> int:
    """Samples per task: small enough that every slot gets several tasks, at most TASK_SAMPLES.
    Neural codecs: one batch of `encode_batch_size`, cut where a local build cuts its batches, so
    that every batched analysis sees the same samples (one sample without batched analysis)."""
    if codec.uses_weights:
        return encode_batch_size if is_batched(codec) else 1
    return max(1, min(TASK_SAMPLES, math.ceil(count / (WINDOW_PER_SLOT * slots))))


def is_batched(codec: Codec) -> bool:
    return bool(getattr(codec, "batched_analysis", False))


_worker_codecs: dict[str, Codec] = {}  # per Ray worker process: codecs by their settings, made once


def encode_task(
    source: Source,
    codec_name: str,
    codec_options: dict[str, Any],
    metric_names: list[str],
    refs: list[SourceRef],
    device: str = "cpu",
) -> list[Encoded | Skipped]:
    """One Ray task: read and encode `refs` in a worker process, as a local worker does
    (encode.encode_batch for batched neural codecs, the analysis on `device`; else encode.encode_sample)."""
    key = json.dumps([codec_name, codec_options], sort_keys=True, default=str)
    if key not in _worker_codecs:
        import torch

        torch.set_num_threads(1)  # one CPU per task, as a local worker process has
        _worker_codecs[key] = codecs.get(codec_name, **codec_options)
    codec = _worker_codecs[key]
    if is_batched(codec):
        return encode_batch(source, codec, refs, metric_names, encode_settings(codec, device, 1))
    return [encode_sample(source, codec, ref, metric_names) for ref in refs]


def prepare(codec: Codec, address: str | None, local_cpus: int, device: str, encode_batch_size: int) -> Any:
    """Check a Ray build's settings and connect (see `connect`), before the build touches its
    folder; returns ray. The device is looked for on the cluster's workers, not in this process."""
    needs = task_resources(device)
    # a CUDA device is checked here as "cpu": this process may have no GPU; each task checks its own
    encode_settings(codec, "cpu" if "num_gpus" in needs else device, encode_batch_size)
    if "num_gpus" in needs and not is_batched(codec):
        raise UsageError(f"--device applies to neural codecs; {codec.name} encodes on the CPU one sample at a time.")
    ray = connect(address, local_cpus)
    if "num_gpus" in needs and not ray.cluster_resources().get("GPU"):
        raise UsageError(f"--device {device}: the Ray cluster has no GPU to encode on.")
    return ray


def encode_on_ray(
    source: Source,
    codec: Codec,
    codec_options: dict[str, Any],
    refs: list[SourceRef],
    metric_names: list[str],
    *,
    address: str | None,
    local_cpus: int,
    device: str = "cpu",
    encode_batch_size: int = 1,
) -> Iterator[Encoded | Skipped]:
    """Encoded (or skipped) samples in source order, encoded by Ray tasks (see the module's docstring).
    `device` and `encode_batch_size` as for a local build (encode.encode_all)."""
    ray = prepare(codec, address, local_cpus, device, encode_batch_size)
    needs = task_resources(device)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = task_samples(len(refs), slots, codec, encode_batch_size)
    remote = ray.remote(encode_task).options(max_retries=MAX_RETRIES, retry_exceptions=[OSError], **needs)
    if not refs:
        return
    source_ref = ray.put(source)  # sent once; each task gets it from the object store
    window: deque = deque()
    try:
        for start in range(0, len(refs), size):
            chunk = refs[start : start + size]
            task = remote.remote(source_ref, codec.name, codec_options, metric_names, chunk, device)
            window.append((task, chunk))
            if len(window) >= WINDOW_PER_SLOT * slots:
                yield from _results(ray, *window.popleft())
        while window:
            yield from _results(ray, *window.popleft())
    finally:
        for pending, _ in window:  # a stopped build (an error, --strict, Ctrl-C) leaves no task running
            with contextlib.suppress(Exception):  # finished meanwhile, or the cluster is gone
                ray.cancel(pending)


def _results(ray: Any, task: Any, chunk: list[SourceRef]) -> list[Encoded | Skipped]:
    """A task's results; a lossyds error raised in the task as itself; a task that kept failing
    (its worker died, an OSError past its retries, Ray lost it) as one sentence naming its samples."""
    try:
        return ray.get(task)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, LossydsError):
            raise exc.cause from None
        if not isinstance(exc.cause, OSError):
            raise  # a bug in lossyds or a codec: its traceback is what finds it
        reason = f"{type(exc.cause).__name__}: {exc.cause}"
    except ray.exceptions.RayError as exc:  # a crashed worker or node, lost objects, out of memory, ...
        reason = type(exc).__name__
    keys = f"{chunk[0].key}" + (f" .. {chunk[-1].key}" if len(chunk) > 1 else "")
    raise LossydsError(
        f"the Ray task encoding samples {keys} failed {MAX_RETRIES + 1} times ({reason}); "
        "rerunning the build resumes from its last finished shard."
    ) from None
