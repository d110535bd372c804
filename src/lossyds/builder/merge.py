"""`lossyds merge`: combine the finished parts of a partitioned build into one dataset."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from .. import jsontypes
from ..errors import BuildStateError, LossydsError, UsageError
from ..location import is_url, join_location
from ..manifest import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    PARTS_DIR,
    load_manifest,
    shard_format_of,
    shard_name,
)
from .claim import CLAIM_NAME
from .finish import assemble_manifest, finish_folder
from .folder import FINISH_NAMES, MARKER_NAME, Folder, LocalFolder, discard_build, holds_marker
from .journal import TOTAL_KEYS, Journal, ShardStats, remove_empty_folder, zero_totals
from .lock import LOCK_NAME, hold_folder


def _dataset_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest["dataset"].items() if k != "source_root_fingerprint"}


def _base_name(location: str | Path) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def part_locations(out: str | Path) -> list[str | Path]:
    """OUT/parts/part-*-of-* in name order (OUT: a folder or an fsspec URL)."""
    if is_url(out):
        from .remote import RemoteFolder

        parts = RemoteFolder(str(join_location(out, PARTS_DIR)))
        return [join_location(parts.url, name) for name in parts.names(folders=True) if fnmatch(name, "part-*-of-*")]
    return sorted((Path(out) / PARTS_DIR).glob("part-*-of-*")) if (Path(out) / PARTS_DIR).is_dir() else []


def load_parts(out: str | Path) -> tuple[list[str | Path], list[dict[str, Any]]]:
    """The part folders and their manifests, checked: all finished, none missing, same settings."""
    folders = part_locations(out)
    if not folders:
        raise UsageError(f"{out} holds no {PARTS_DIR}/part-*-of-* folders to merge.")
    manifests = []
    for folder in folders:
        try:
            manifests.append(load_manifest(folder))
        except UsageError:
            raise BuildStateError(
                f"part {_base_name(folder)} is not finished (no manifest.json); rerun its build first."
            ) from None
    count = manifests[0]["part"]["count"]
    indices = sorted(m["part"]["index"] for m in manifests)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise BuildStateError(
            f"parts {', '.join(map(str, missing))} of {count} are missing in {join_location(out, PARTS_DIR)}."
        )
    first = manifests[0]
    for manifest, folder in zip(manifests, folders):
        for key in ("codec", "modality"):
            if manifest[key] != first[key]:
                raise BuildStateError(
                    f"part {_base_name(folder)} was built with another {key} than part {_base_name(folders[0])}."
                )
        if (
            _dataset_identity(manifest) != _dataset_identity(first)
            or manifest["part"]["total_records"] != first["part"]["total_records"]
        ):
            raise BuildStateError(
                f"part {_base_name(folder)} was built from another dataset or split than part {_base_name(folders[0])}."
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
    """Metric means weighted by each part's count of finite values (with lossyds.metrics.summaries)."""
    from ..metrics import summaries

    merged = {}
    for name in manifests[0]["metrics"]:
        parts = [m["metrics"][name] for m in manifests if m.get("metrics", {}).get(name)]
        counted = sum(p["count"] for p in parts)
        total = sum(p["mean"] * p["count"] for p in parts if p["mean"] is not None)
        mean = total / counted if counted else None
        merged[name] = {"mean": mean, "count": counted, **summaries(name, mean)}
    return merged


def merge(out: str | Path) -> dict[str, Any]:
    """Combine OUT/parts/part-*-of-N (all finished, same settings) into one dataset in OUT.

    Shards are renumbered in part order, then the merged manifest and card are written and
    the parts folder removed. A local OUT is locked meanwhile (lossyds.builder.lock); an
    fsspec URL is merged with the store's own copies (lossyds.builder.remote)."""
    if is_url(out):
        return merge_remote(str(out))
    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder.")
    folder = LocalFolder(out)
    with hold_folder(out, "merge"):
        check_mergeable(folder)
        folders, manifests = load_parts(out)
        merged, copies = plan_merge(folders, manifests)
        folder.write(JOURNAL_NAME, merge_journal(copies))
        for source, name in copies:
            link_or_copy(source, out / name)
        finish_folder(out, merged, merge_info(folders))
        remove_parts(folder, [LocalFolder(part) for part in folders])
        return merged


def check_mergeable(folder: Folder) -> None:
    """Refuse to merge into a folder that is not the parts' lossyds folder, or that holds a finished build."""
    if not holds_marker(folder):
        raise UsageError(f"{folder.label} is not the folder of a partitioned lossyds build (it has no lossyds marker).")
    if folder.read(MANIFEST_NAME) is not None:
        raise BuildStateError(f"{folder.label} already holds a finished build; remove it before merging parts into it.")
    stale = Journal.parse(folder.read(JOURNAL_NAME), folder.label, strict=False)
    if stale is not None and stale.settings != {"merge": True}:
        raise BuildStateError(f"{folder.label} holds an interrupted build; finish it or remove it before merging.")


def merge_journal(copies: list[tuple[str | Path, str]]) -> bytes:
    """The journal a merge writes first: it names every file the merge is about to write."""
    return Journal(settings={"merge": True}, writing=[name for _, name in copies] + list(FINISH_NAMES)).to_bytes()


def remove_parts(folder: Folder, parts: list[Folder]) -> None:
    """After a merge: each part's recorded files, then its folder and the parts folder where empty."""
    for part in parts:
        discard_build(part)
        for name in (LOCK_NAME, CLAIM_NAME, MARKER_NAME):
            part.remove(name)
    if isinstance(folder, LocalFolder):
        for part in parts:
            with contextlib.suppress(OSError):
                Path(part.label).rmdir()
        with contextlib.suppress(OSError):
            (folder.path / PARTS_DIR).rmdir()


def merge_info(folders: list[str | Path]) -> dict[str, Any]:
    """build-info.json of a merged build."""
    return {
        "merged_parts": [_base_name(f) for f in folders],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def plan_merge(
    folders: list[str | Path], manifests: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[tuple[str | Path, str]]]:
    """The merged manifest, and the copies that make it true: (a part's shard, its name in OUT)."""
    shards: list[ShardStats] = []
    copies: list[tuple[str | Path, str]] = []
    totals = zero_totals()
    skipped: list[dict[str, str]] = []
    json_types: Any = jsontypes.NULL
    for manifest, folder in zip(manifests, folders):
        json_types = jsontypes.unify(json_types, manifest.get("json_types", jsontypes.MIXED))  # MIXED: not recorded
        for shard, digest in zip(manifest["shards"], manifest["source_digests"]):
            name = shard_name(len(shards), shard_format_of(shard["path"]))
            copies.append((join_location(folder, shard["path"]), name))
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
        json_types=json_types,
    )
    merged["merged_from_parts"] = first["part"]["count"]
    if first.get("metrics"):
        merged["metrics"] = merged_metrics(manifests)
    return merged, copies


def merge_remote(url: str) -> dict[str, Any]:
    """lossyds.builder.merge for a URL: parts' shards copied inside the store, the manifest last, then the parts removed."""
    from ..storage import storage_errors
    from .claim import BuildClaim
    from .remote import RemoteFolder, Uploader, clear_staging, staging_folder

    with storage_errors(url, "merging in"):
        remote = RemoteFolder(url)
        staging = staging_folder(url)
        staging.mkdir(parents=True, exist_ok=True)
        try:
            with hold_folder(staging, f"merge into {remote.url}"), BuildClaim(remote, "merge") as build_claim:
                try:
                    clear_staging(staging)
                    check_mergeable(remote)
                    folders, manifests = load_parts(remote.url)
                    merged, copies = plan_merge(folders, manifests)
                    remote.write(JOURNAL_NAME, merge_journal(copies))
                    for source, name in copies:
                        build_claim.check()
                        remote.copy_inside(str(source), name)
                    finish_folder(staging, merged, merge_info(folders))
                    Uploader(remote, staging, build_claim).build_finished()
                    remove_parts(remote, [RemoteFolder(str(folder)) for folder in folders])
                except OSError as exc:
                    raise LossydsError(f"merging in {remote.url} failed: {exc.strerror or exc}.") from exc
                finally:
                    clear_staging(staging)
        finally:
            remove_empty_folder(staging)
    return merged
