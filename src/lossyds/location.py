"""Locations: where a build, a shard or a manifest lives, a local path or an fsspec URL.

One test decides which it is (`is_url`: the text holds "://"), so a location means the
same thing to the builder, the loader, verify and push. Local locations are `Path`s; URLs
stay `str`, since `Path` would fold the `//` of `s3://bucket` into one slash.
"""

from __future__ import annotations

from pathlib import Path

Location = str | Path


def is_url(location: Location) -> bool:
    """Whether `location` is an fsspec URL (hf://, s3://, https://, file://, ...) rather than a local path."""
    return "://" in str(location)


def as_location(location: Location) -> Location:
    """A URL as `str`, anything else as `Path`."""
    return str(location) if is_url(location) else Path(location)


def join_location(root: Location, name: str) -> Location:
    """ROOT/NAME for a local folder (Path) or an fsspec URL (str)."""
    return f"{str(root).rstrip('/')}/{name}" if is_url(root) else Path(root) / name


def read_location(location: Location) -> bytes:
    """Whole contents of a local path or an fsspec URL."""
    if not is_url(location):
        return Path(location).read_bytes()
    import fsspec

    with fsspec.open(str(location), "rb") as handle:
        return handle.read()
