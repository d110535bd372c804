"""Reading tar shards: the member scanner and the per-sample index (no member data read)."""

from __future__ import annotations

import functools
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShardError


@dataclass
class SampleEntry:
    """One sample's members inside a shard: extension -> (byte offset, size)."""

    key: str
    members: dict[str, tuple[int, int]]


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/KEY.ext.more' -> ('KEY', 'ext.more'): WebDataset's key/extension split (first dot of the basename)."""
    base = name.rsplit("/", 1)[-1]
    key, dot, extension = base.partition(".")
    return key, extension


def index_tar(
    source: str | Path | bytes | mmap.mmap, shard_name: str, damage: list[ShardError] | None = None
) -> list[SampleEntry]:
    """Index a shard's members (no member data read). Refuses links, directories, absolute or
    `..` paths and bad header checksums. `source` is a path or the shard's bytes / mmap.

    Raises ShardError naming the shard (and the last good sample) on any damage; with a
    `damage` list, appends the error there instead and returns the samples before it
    (dropping the one the damage may have cut short)."""
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as handle:
                buffer: bytes | mmap.mmap = handle.read()
        except OSError as exc:
            raise ShardError(f"shard {shard_name} cannot be read: {exc}", shard=shard_name) from exc
    else:
        buffer = source
    entries: list[SampleEntry] = []
    try:
        index_into(entries, buffer, shard_name)
    except ShardError as exc:
        if damage is None:
            raise
        damage.append(exc)
        return entries[:-1]
    return entries


def index_into(entries: list[SampleEntry], buffer: bytes | mmap.mmap, shard_name: str, cut_ok: bool = False) -> None:
    """Append to `entries` the samples of the tar in `buffer`, checking each member's name."""
    for name, offset, size in scan_tar(buffer, shard_name, cut_ok):
        if name.startswith("/") or ".." in name.split("/") or "/" in name:
            raise ShardError(f"shard {shard_name} holds a member with an unsafe path {name!r}", shard=shard_name)
        key, extension = split_member_name(name)
        if not key or not extension:
            raise ShardError(f"shard {shard_name} holds a member {name!r} without KEY.EXT form", shard=shard_name)
        if not entries or key != entries[-1].key:
            entries.append(SampleEntry(key, {}))
        elif extension in entries[-1].members:
            raise ShardError(
                f"shard {shard_name}: sample {key!r} has two {extension!r} members", shard=shard_name, key=key
            )
        entries[-1].members[extension] = (offset, size)


_REGULAR = (b"0", b"\0", b"7")
_ZERO_BLOCK = b"\0" * 512


def _damaged(shard_name: str, position: int, last: str | None, why: str) -> ShardError:
    return ShardError(
        f"shard {shard_name} is damaged at byte {position} after member {last!r}: {why}",
        shard=shard_name,
        key=split_member_name(last)[0] if last else None,
    )


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def scan_tar(buffer: bytes | mmap.mmap, shard_name: str, cut_ok: bool = False) -> Iterator[tuple[str, int, int]]:
    """(member name, data offset, size) of every regular file in a POSIX tar held in memory;
    with `cut_ok`, a last member cut short is yielded with the bytes it has.

    Written here rather than using `tarfile` because tarfile builds a full TarInfo per
    member (eight field parses, PAX/GNU handling in Python), a large share of the loader's
    time on small JPEGs. This reads only the name, size, type and checksum of each 512-byte
    header (ustar, PAX 'x' path/size records and GNU long names), and refuses anything else.
    """
    total = len(buffer)
    position = 0
    pending_name: str | None = None
    pending_size: int | None = None
    last = None
    while position + 512 <= total:
        header = buffer[position : position + 512]
        if header == _ZERO_BLOCK:
            return  # end-of-archive blocks
        damaged = functools.partial(_damaged, shard_name, position, last)
        try:
            stored = _octal(header[148:156])
            size = _octal(header[124:136])
        except ValueError:
            raise damaged("unreadable header numbers") from None
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise damaged("header checksum mismatch")
        kind = header[156:157]
        data = position + 512
        end = data + size + (-size % 512)
        if data + size > total:
            if not (cut_ok and kind in _REGULAR):
                raise damaged(f"member of {size} bytes runs past the end of the file (truncated)")
            size = total - data
        if kind in (b"x", b"L", b"g"):
            payload = bytes(buffer[data : data + size])
            if kind == b"L":
                pending_name = payload.rstrip(b"\0").decode("utf-8", "replace")
            elif kind == b"x":
                for key, value in _pax_records(payload, damaged):
                    if key == "path":
                        pending_name = value
                    elif key == "size":
                        pending_size = int(value)
            position = end
            continue
        if kind not in _REGULAR:
            raise ShardError(
                f"shard {shard_name} holds a non-file member (type {kind!r}) after {last!r}: links and folders are refused",
                shard=shard_name,
            )
        if pending_size is not None:
            size = pending_size
            end = data + size + (-size % 512)
            if data + size > total:
                if not cut_ok:
                    raise damaged("member runs past the end of the file (truncated)")
                size = total - data
        if pending_name is not None:
            name = pending_name
        else:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8", "replace") + "/" + name
        pending_name = pending_size = None
        last = name
        yield name, data, size
        position = end
    if position < total and any(buffer[position:total]):
        raise ShardError(
            f"shard {shard_name} ends in a partial header after member {last!r} (truncated)", shard=shard_name
        )


def _pax_records(payload: bytes, damaged) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(payload) and payload[position : position + 1] != b"\0":
        space = payload.find(b" ", position)
        if space < 0:
            raise damaged("malformed PAX record")
        try:
            length = int(payload[position:space])
        except ValueError:
            raise damaged("malformed PAX record length") from None
        if length <= 0 or position + length > len(payload):
            raise damaged("PAX record runs past its header")
        record = payload[space + 1 : position + length - 1].decode("utf-8", "replace")
        key, _, value = record.partition("=")
        yield key, value
        position += length
