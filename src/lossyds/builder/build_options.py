"""What a build is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISTRIBUTORS = ("local", "ray")  # who encodes: this machine's worker processes, or Ray tasks (ray_distributor.py)


@dataclass
class BuildOptions:
    """One build: dataset x codec x rate into `out`.

    `codec_options` and `source_options` are the codec's and the dataset's declared options
    (`lossyds.codecs.codec_class(name).declared_options()`, likewise for sources), e.g.
    {"quality": 5} or {"kbps": 6, "weights": "random:0"}. Shard size: at most `shard_samples`
    samples and `shard_mb` megabytes (10^6 bytes) each."""

    codec: str
    out: Path
    codec_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "sample"
    root: Path | None = None
    split: str | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    shard_samples: int = 1000
    shard_mb: float = 1024.0
    workers: int = 0  # encoding processes; 0 = one per CPU core
    strict: bool = False  # stop on the first unreadable source file instead of skipping it
    force: bool = False  # rebuild a folder that holds a finished build
    limit: int | None = None  # encode only the first N source samples (quick trials)
    part: tuple[int, int] | None = None  # (k, n): build slice k of n into OUT/parts/
    shard_format: str = (
        "auto"  # "tar" | "tar.gz" | "tar.zst" | "auto": gzip for audio (small payloads), plain tar for images
    )
    metrics: list[str] = field(default_factory=list)  # per-sample quality metrics (lossyds.metrics)
    device: str = "cpu"  # neural codecs: the torch device their analysis transform runs on
    encode_batch: int = 1  # neural codecs: samples per batched analysis (entropy coding stays per sample, on CPU)
    distributor: str = "local"  # one of DISTRIBUTORS
    ray_address: str | None = None  # distributor "ray": the head's host:port, or "auto"; None: a local runtime
