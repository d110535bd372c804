"""The loader's shard reader: opens shards (local, memory-mapped; or streamed from a URL) and
hands out (shard, entry) references for a range of samples, without reading member bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ShardError
from ..location import join_location
from ..shards.mapped import MappedShard
from ..shards.tar import SampleEntry

INDEX_CACHE_SAMPLES = 250_000  # shard-index entries remembered per process across epochs (a few hundred bytes each)

Reference = tuple[MappedShard, SampleEntry]


class ShardReader:
    """Reads the shards of one build. `tolerate_damage`: a damaged shard serves the samples
    before the damage and the damage is reported through `note` (on_error="skip")."""

    def __init__(
        self, root: str | Path, shards: list[dict[str, Any]], tolerate_damage: bool, note: Callable[[str], None]
    ):
        self.root = root
        self.shards = shards
        self.tolerate_damage = tolerate_damage
        self.note = note
        self._index_cache: dict[
            str, tuple[tuple[int, int, int], list[SampleEntry]]
        ] = {}  # shard -> (file stamp, entries)
        self._index_cached_samples = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to spawned workers) without the index cache: each process keeps its own."""
        state = dict(self.__dict__)
        state["_index_cache"], state["_index_cached_samples"] = {}, 0
        return state

    def open(self, name: str) -> MappedShard:
        """Open a shard, reusing its index from an earlier epoch when the file is unchanged.

        Scanning tar headers again every epoch would cost the thread that feeds the decode
        threads. Only local plain-tar shards that indexed cleanly are remembered, up to
        INDEX_CACHE_SAMPLES entries per process."""
        location = join_location(self.root, name)
        stamp = None
        if isinstance(location, Path) and location.suffix == ".tar":
            try:
                info = location.stat()
                stamp = (info.st_size, info.st_mtime_ns, info.st_ino)
            except OSError:
                stamp = None
        cached = self._index_cache.get(name)
        index = cached[1] if cached is not None and stamp is not None and cached[0] == stamp else None
        shard = MappedShard(location, name, tolerate_damage=self.tolerate_damage, index=index)
        if (
            index is None
            and stamp is not None
            and not shard.damage
            and self._index_cached_samples + len(shard.entries) <= INDEX_CACHE_SAMPLES
        ):
            self._index_cache[name] = (stamp, shard.entries)
            self._index_cached_samples += len(shard.entries)
        return shard

    def references(self, shard_index: int, first: int, end: int) -> Iterator[Reference]:
        """(shard, entry) references of one range; the map closes when the last reference goes."""
        name = self.shards[shard_index]["path"]
        try:
            shard = self.open(name)
        except ShardError as exc:
            if not self.tolerate_damage:
                raise
            self.note(str(exc))
            return
        expected = self.shards[shard_index]["num_samples"]
        for damage in shard.damage:  # on_error="skip": the samples before the damage are still served
            self.note(str(damage) if shard.stream_damage else f"{damage} (samples after it in this shard are lost)")
        if len(shard.entries) != expected and not shard.damage:
            error = ShardError(
                f"shard {name} holds {len(shard.entries)} samples but the manifest says {expected}", shard=name
            )
            if not self.tolerate_damage:
                raise error
            self.note(str(error))
        for entry in shard.entries[first:end]:
            yield shard, entry
