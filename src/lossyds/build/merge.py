"""`lossyds merge`: combine the finished parts of a partitioned build into one dataset."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import BuildStateError, UsageError
from ..manifest import MANIFEST_NAME, PARTIAL_SUFFIX, PARTS_DIR, load_manifest, shard_format_of, shard_name
from .finish import assemble_manifest, finish_folder
from .journal import TOTAL_KEYS, ShardStats, zero_totals
from .lock import hold_folder


def _dataset_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest["dataset"].items() if k != "source_root_fingerprint"}


def load_parts(out: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """The part folders and their manifests, checked: all finished, none missing, same settings."""
    folders = sorted((out / PARTS_DIR).glob("part-*-of-*")) if (out / PARTS_DIR).is_dir() else []
    if not folders:
        raise UsageError(f"{out} holds no {PARTS_DIR}/part-*-of-* folders to merge.")
    if (out / MANIFEST_NAME).exists():
        raise BuildStateError(f"{out} already holds a finished build; remove it before merging parts into it.")
    manifests = []
    for folder in folders:
        if not (folder / MANIFEST_NAME).is_file():
            raise BuildStateError(f"part {folder.name} is not finished (no manifest.json); rerun its build first.")
        manifests.append(load_manifest(folder))
    count = manifests[0]["part"]["count"]
    indices = sorted(m["part"]["index"] for m in manifests)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise BuildStateError(f"parts {', '.join(map(str, missing))} of {count} are missing in {out / PARTS_DIR}.")
    first = manifests[0]
    for manifest, folder in zip(manifests, folders):
        for key in ("codec", "modality"):
            if manifest[key] != first[key]:
                raise BuildStateError(f"part {folder.name} was built with another {key} than part {folders[0].name}.")
        if (
            _dataset_identity(manifest) != _dataset_identity(first)
            or manifest["part"]["total_records"] != first["part"]["total_records"]
        ):
            raise BuildStateError(
                f"part {folder.name} was built from another dataset or split than part {folders[0].name}."
            )
    ordered = sorted(zip(manifests, folders), key=lambda pair: pair[0]["part"]["index"])
    return [folder for _, folder in ordered], [manifest for manifest, _ in ordered]


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes `source`'s content atomically (a hard link when possible, else a copy)."""
    tmp = target.with_name(target.name + PARTIAL_SUFFIX)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def merged_metrics(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metric means weighted by each part's count of finite values."""
    merged = {}
    for name in manifests[0]["metrics"]:
        parts = [m["metrics"][name] for m in manifests if m.get("metrics", {}).get(name)]
        counted = sum(p["count"] for p in parts)
        total = sum(p["mean"] * p["count"] for p in parts if p["mean"] is not None)
        merged[name] = {"mean": total / counted if counted else None, "count": counted}
    return merged


def merge(out: str | Path) -> dict[str, Any]:
    """Combine OUT/parts/part-*-of-N (all finished, same settings) into one dataset in OUT.

    Shards are renumbered in part order, then the merged manifest and card are written and
    the parts folder removed. OUT is locked meanwhile (lossyds.build.lock)."""
    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder.")
    with hold_folder(out, "merge"):
        return _merge_locked(out)


def _merge_locked(out: Path) -> dict[str, Any]:
    folders, manifests = load_parts(out)
    shards: list[ShardStats] = []
    totals = zero_totals()
    skipped: list[dict[str, str]] = []
    for manifest, folder in zip(manifests, folders):
        for shard, digest in zip(manifest["shards"], manifest["source_digests"]):
            name = shard_name(len(shards), shard_format_of(shard["path"]))
            link_or_copy(folder / shard["path"], out / name)
            shards.append(
                ShardStats(
                    name, shard["num_samples"], shard["bytes"], shard["sha256"], shard["payload_bytes"], 0, 0, digest
                )
            )
        skipped += manifest["skipped"]
        for key in TOTAL_KEYS:
            totals[key] += manifest["totals"][key]
    first = manifests[0]
    merged = assemble_manifest(
        dataset=_dataset_identity(first),
        codec_entry=first["codec"],
        modality=first["modality"],
        shards=shards,
        skipped=skipped,
        totals=totals,
    )
    merged["merged_from_parts"] = first["part"]["count"]
    if first.get("metrics"):
        merged["metrics"] = merged_metrics(manifests)
    finish_folder(
        out,
        merged,
        {"merged_parts": [f.name for f in folders], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )
    shutil.rmtree(out / PARTS_DIR)
    return merged
