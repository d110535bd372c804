from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from lossyds.builder import BuildOptions, build

# A mid/low rate for every standard codec, as the CLI would be given it.
STANDARD_CODECS: dict[str, dict[str, Any]] = {
    "jpeg": {"quality": 5},
    "webp": {"quality": 0},
    "avif": {"quality": 10},
    "png": {},
    "opus": {"kbps": 6},
    "mp3": {"kbps": 32},
    "flac": {},
}


def build_sample(out: Path, codec: str, split: str | None = None, **options: Any) -> dict:
    rate = dict(STANDARD_CODECS.get(codec, {}))
    rate.update(options.pop("rate", {}))
    options.setdefault("workers", 1)
    return build(BuildOptions(codec=codec, out=out, codec_options=rate, split=split, **options))


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("shard-*.tar*"))} | {
        "manifest.json": hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    }


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Session cache of sample builds: built(codec, split=None, **options) -> folder."""
    cache: dict[tuple, Path] = {}

    def get(codec: str, split: str | None = None, **options: Any) -> Path:
        key = (codec, split, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"build-{codec}")
            build_sample(out, codec, split, **options)
            cache[key] = out
        return cache[key]

    return get
