"""Build stage 5: the manifest from the journal's shards and totals, and the finished folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..manifest import (
    BUILD_INFO_NAME,
    CARD_NAME,
    FORMAT_VERSION,
    JOURNAL_NAME,
    MANIFEST_NAME,
    add_digests,
    bits_summary,
    key_digest,
    write_json_atomic,
    write_text_atomic,
)
from .journal import ShardStats

ACCOUNTING = (
    "payload = bytes of the codec bitstream members (complete standard files: everything needed to decode), x8; "
    "container = shard files on disk, x8; source = source files as read, x8; "
    "raw = 8 bits per pixel per channel, or 16 bits per audio sample per channel"
)


def assemble_manifest(
    *,
    dataset: dict[str, Any],
    codec_entry: dict[str, Any],
    modality: str,
    shards: list[ShardStats],
    skipped: list[dict[str, str]],
    totals: dict[str, Any],
    json_types: Any,
) -> dict[str, Any]:
    """manifest.json's content. `dataset`: name, split, license, tasks, options; `json_types`:
    the records' KEY.json types (lossyds.jsontypes)."""
    num_samples = sum(s.num_samples for s in shards)
    fingerprint = add_digests(
        [s.source_digest for s in shards] + [key_digest(f"skipped:{s['key']}", "") for s in skipped]
    )
    bits = bits_summary(
        modality=modality,
        num_samples=num_samples,
        payload_bytes=sum(s.payload_bytes for s in shards),
        container_bytes=sum(s.bytes for s in shards),
        source_bytes=totals["source_bytes"],
        raw_bits=totals["raw_bits"],
        pixels=totals["pixels"],
        seconds=totals["seconds"],
        audio_samples=totals["audio_samples"],
    )
    return {
        "format_version": FORMAT_VERSION,
        "lossyds_version": __version__,
        "dataset": {**dataset, "source_root_fingerprint": fingerprint},
        "codec": codec_entry,
        "modality": modality,
        "num_samples": num_samples,
        "num_skipped": len(skipped),
        "skipped": skipped,
        "shards": [s.to_manifest() for s in shards],
        "bits": bits,
        "totals": totals,
        "source_digests": [s.source_digest for s in shards],
        "json_types": json_types,
        "accounting": ACCOUNTING,
    }


def metric_means(names: list[str], sums: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """{name: {mean, count}} over the finite values summed in `sums` (name -> [sum, count]), with
    what the metric's record adds beside its mean (lossyds.metrics.summaries)."""
    from ..metrics import summaries

    means = {}
    for name in names:
        total, count = sums.get(name, [0.0, 0])
        mean = total / count if count else None
        means[name] = {"mean": mean, "count": count, **summaries(name, mean)}
    return means


def finish_folder(out: Path, manifest: dict[str, Any], build_info: dict[str, Any]) -> None:
    """Card, build info, then the manifest (last: a reader never sees a half build), then drop the journal."""
    from ..hub import dataset_card

    write_text_atomic(out / CARD_NAME, dataset_card(manifest))
    write_json_atomic(out / BUILD_INFO_NAME, build_info)
    write_json_atomic(out / MANIFEST_NAME, manifest)
    (out / JOURNAL_NAME).unlink(missing_ok=True)
