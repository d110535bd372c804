"""Build stages 3-4: pick each sample's bitstream, then write its record into shards and the journal."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import jsontypes, record
from ..manifest import DIGEST_MODULUS, key_digest
from ..shards.writer import FinishedShard, ShardWriter
from .encode import Encoded
from .journal import TOTAL_KEYS, Journal, ShardStats, zero_totals


class RateKeeper:
    """Chooses among a sample's rate candidates (codecs that target an achieved rate: bpp,
    target_kbps) the one that keeps the dataset's running achieved rate closest to the target."""

    def __init__(self, target: tuple[str, float] | None, journal: Journal, pending: dict[str, Any]):
        self.target = target  # ("pixels", bits per pixel) or ("seconds", bits per second), or None
        self.journal = journal
        self.pending = pending  # totals since the last finished shard (ShardStage's)

    def choose(self, encoded: Encoded) -> int:
        if len(encoded.candidates) == 1 or self.target is None:
            return 0
        unit, bits_per_unit = self.target
        bits = (self.journal.totals["payload_bytes"] + self.pending["payload_bytes"] + encoded.extra_payload) * 8
        units = self.journal.totals[unit] + self.pending[unit] + getattr(encoded, unit)
        return min(
            range(len(encoded.candidates)),
            key=lambda i: abs(bits + len(encoded.candidates[i][1]) * 8 - bits_per_unit * units),
        )


@dataclass
class _ShardTally:
    """What the open shard holds, beyond what the tar layer counts."""

    first_index: int
    payload_bytes: int = 0
    source_sum: int = 0


class ShardStage:
    """Writes chosen records into shards and folds each finished shard into the journal.

    Totals, skips and metric sums since the last finished shard are kept pending and reach
    the journal with that shard, so a resumed build counts every sample exactly once."""

    def __init__(
        self,
        out: Path,
        writer: ShardWriter,
        journal: Journal,
        extension: str,
        with_metrics: bool,
        on_commit: Callable[[str], None] | None = None,
    ):
        """`on_commit(shard name)`: called once a finished shard and the journal recording it are written."""
        self.out = out
        self.on_commit = on_commit
        self.writer = writer
        self.journal = journal
        self.extension = extension
        self.with_metrics = with_metrics
        self.pending = zero_totals()
        self.pending_skips: list[dict[str, str]] = []
        self.pending_metrics: dict[str, list[float]] = {}
        self.pending_types: Any = jsontypes.NULL
        self.tally: _ShardTally | None = None

    def skip(self, key: str, reason: str) -> None:
        self.pending_skips.append({"key": key, "reason": reason})

    def write(self, index: int, encoded: Encoded, chosen: int, metrics: dict[str, float]) -> None:
        """Add source sample number `index` with its candidate `chosen`."""
        settings_used, bitstream = encoded.candidates[chosen]
        payload = len(bitstream) + encoded.extra_payload
        meta = {
            **encoded.meta,
            "payload_bits": payload * 8,
            **({"codec_settings": settings_used} if settings_used else {}),
        }
        if self.with_metrics:
            meta["metrics"] = metrics
        members = record.members(self.extension, bitstream, meta, encoded.attachments)
        finished = self.writer.add(encoded.key, members)
        if finished is not None:
            self._commit(finished, next_index=index)
        crc32 = {"struct": {member: "int64" for member, _ in members if member != record.META}}  # added by members()
        self.pending_types = jsontypes.unify(
            self.pending_types, {"struct": {**jsontypes.type_of(meta)["struct"], "crc32": crc32}}
        )
        for name, value in metrics.items():  # after the commit: this sample belongs to the next shard
            if math.isfinite(value):
                summed = self.pending_metrics.setdefault(name, [0.0, 0])
                summed[0] += value
                summed[1] += 1
        if self.tally is None:
            self.tally = _ShardTally(first_index=index)
        self.tally.payload_bytes += payload
        self.tally.source_sum = (
            self.tally.source_sum + int(key_digest(encoded.key, encoded.source_sha256), 16)
        ) % DIGEST_MODULUS
        for name in TOTAL_KEYS[:-1]:
            self.pending[name] += getattr(encoded, name)
        self.pending["payload_bytes"] += payload

    def close(self, next_index: int) -> None:
        """Finish the last shard (and record skips after it)."""
        finished = self.writer.close()
        if finished is not None:
            self._commit(finished, next_index)
        elif self.pending_skips:  # trailing skipped samples after the last shard
            self.journal.skipped.extend(self.pending_skips)
            self.pending_skips.clear()
            self.journal.next_index = next_index

    def _commit(self, finished: FinishedShard, next_index: int) -> None:
        assert self.tally is not None
        stats = ShardStats(
            path=finished.name,
            num_samples=finished.num_samples,
            bytes=finished.bytes,
            sha256=finished.sha256,
            payload_bytes=self.tally.payload_bytes,
            first_index=self.tally.first_index,
            next_index=next_index,
            source_digest=f"{self.tally.source_sum:064x}",
        )
        self.tally = None
        journal = self.journal
        journal.shards.append(asdict(stats))
        journal.skipped.extend(self.pending_skips)
        self.pending_skips.clear()
        for name in TOTAL_KEYS:
            journal.totals[name] += self.pending[name]
            self.pending[name] = 0
        for name, (total, count) in self.pending_metrics.items():
            summed = journal.metrics.setdefault(name, [0.0, 0])
            summed[0] += total
            summed[1] += count
        self.pending_metrics.clear()
        journal.json_types = jsontypes.unify(journal.json_types, self.pending_types)
        self.pending_types = jsontypes.NULL
        journal.next_index = next_index
        journal.save(self.out)
        if self.on_commit is not None:
            self.on_commit(finished.name)
