"""Hugging Face Hub: the dataset card, the push plan, and the one upload call.

The card's YAML maps the build's split to its shards (`configs` / `data_files`), so
`datasets.load_dataset(DIR_or_REPO)` finds them, and declares the columns' types
(`dataset_info.features`, from the manifest's `json_types`); the human table states codec, rate,
achieved bits and sample counts. Tokens come from the standard Hugging Face login and
are never read, printed or written by lossyds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError
from .location import is_url
from .manifest import CARD_NAME, MANIFEST_NAME, achieved_rate_text, load_manifest, shard_format_of

# https://huggingface.co/docs/hub/repositories-recommendations (checked 2026-11)
HUB_MAX_FILE_BYTES = 50 * 10**9  # hard limit per file
HUB_RECOMMENDED_FILE_BYTES = 20 * 10**9
HUB_MAX_FILES_PER_FOLDER = 10_000
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def hf_split_name(split: str | None) -> str:
    """Hugging Face split names are \\w+: 'dev-clean' -> 'dev_clean'."""
    return re.sub(r"\W", "_", split or "train") or "train"


# The member types Hugging Face datasets' webdataset reader decodes itself (its IMAGE_EXTENSIONS and
# AUDIO_EXTENSIONS, as far as lossyds writes them; tests/test_hub.py checks them against datasets).
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
AUDIO_MEMBERS = ("flac", "mp3", "opus", "ogg", "wav")


def card_features(manifest: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`dataset_info.features` for the card (datasets' YAML form), or None when the manifest's
    `json_types` cannot be declared: the bitstream and lossless members as Image or Audio
    where datasets decodes them, else binary; `cls` int64, `txt` string, `json` as its types."""
    from .jsontypes import declared, yaml_field

    # A build whose every source was skipped holds no record: its type is "null", not a struct.
    kind = declared(manifest.get("json_types", "mixed"))
    if not isinstance(kind, dict) or "crc32" not in kind.get("struct", {}) or "struct" not in kind["struct"]["crc32"]:
        return None
    extension = manifest["codec"]["extension"]
    members = [extension, *sorted(m for m in kind["struct"]["crc32"]["struct"] if m != extension)]
    features = []
    for member in members:
        suffix = member.rsplit(".", 1)[-1]
        dtype = (
            "image"
            if suffix in IMAGE_MEMBERS
            else "audio"
            if suffix in AUDIO_MEMBERS
            else {"cls": "int64", "txt": "string"}.get(member, "binary")
        )
        features.append({"name": member, "dtype": dtype})
        if member == extension:
            features.append(yaml_field("json", kind))
    return [*features, {"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]


def dataset_card(manifest: dict[str, Any], license: str | None = None, repo: str = "OWNER/NAME") -> str:
    """README.md with YAML metadata for a built folder (deterministic in the manifest)."""
    codec, dataset, bits = manifest["codec"], manifest["dataset"], manifest["bits"]
    split = hf_split_name(dataset.get("split"))
    metadata: dict[str, Any] = {
        "license": license or dataset.get("license") or "unknown",
        "pretty_name": f"{dataset['name']} {dataset.get('split') or ''} / {codec['name']} (lossyds)".replace("  ", " "),
        "tags": ["lossyds", "lossy-compression", codec["name"], "webdataset"],
        "task_categories": dataset.get("tasks") or [],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {
                        "split": split,
                        "path": "*."
                        + (shard_format_of(manifest["shards"][0]["path"]) if manifest["shards"] else "tar"),
                    }
                ],
            }
        ],
    }
    features = card_features(manifest)
    if features is not None:
        metadata["dataset_info"] = {"features": features}
    params = ", ".join(f"{k}={v}" for k, v in codec["params"].items()) or "defaults"  # every setting, for the record
    weights = codec.get("weights")
    weights_text = (
        "none (not a learned codec)"
        if not weights
        else f"{weights.get('name')} sha256 {weights.get('sha256', '')[:16]} ({weights.get('source')})"
    )
    rows = [
        ("source dataset", f"{dataset['name']}, split `{dataset.get('split')}`"),
        ("codec", f"`{codec['name']}` ({params}), {codec['library']} {codec['library_version']}"),
        ("bitstream member", f"`.{codec['extension']}`"),
        ("achieved rate", achieved_rate_text(manifest)),
        ("mean payload bits per sample", f"{bits['per_sample_mean']:.0f}"),
        (
            "compression",
            f"{bits['compression_ratio_vs_raw']:.1f}:1 vs raw, {bits['compression_ratio_vs_source']:.1f}:1 vs source files",
        ),
        (
            "samples",
            f"{manifest['num_samples']} in {len(manifest['shards'])} shard(s); {manifest['num_skipped']} source files skipped",
        ),
        ("payload / bytes on disk", f"{bits['payload_to_container']:.3f}"),
        ("weights", weights_text),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).rstrip()}
---

# {metadata["pretty_name"]}

Precompressed with [lossyds](https://pypi.org/project/lossyds/): each sample's `.{codec["extension"]}`
member is the real bitstream; targets are stored losslessly beside it. Rates are
achieved rates, counting the whole bitstream (`manifest.json` has the accounting).

| | |
|---|---|
{table}

## Load

```python
import lossyds
dataset = lossyds.open_dataset("hf://datasets/{repo}")   # decoded tensors, true bits per sample

import datasets
rows = datasets.load_dataset("{repo}", split="{split}")   # standard members decoded by datasets
```
"""


@dataclass
class PushPlan:
    directory: Path
    repo: str
    files: list[str]  # names relative to directory
    total_bytes: int
    card: str
    notes: list[str] = field(default_factory=list)


def plan_push(directory: str | Path, repo: str, license: str | None = None) -> PushPlan:
    """Everything `push` will upload, checked against the Hub's limits; nothing is sent."""
    if not _REPO_ID.match(repo):
        raise UsageError(f"--repo must look like OWNER/NAME (got {repo!r}).")
    if is_url(directory):
        raise UsageError(
            f"push uploads a build folder on this machine, and {directory} is a URL; copy the build to a local folder first."
        )
    root = Path(directory).resolve()
    manifest = load_manifest(root)
    if not (license or manifest["dataset"].get("license")):
        raise UsageError(
            "the source dataset's license is unknown; pass --license (a Hugging Face license id such as cc-by-4.0)."
        )
    names = [MANIFEST_NAME, CARD_NAME] + [shard["path"] for shard in manifest["shards"]]
    total = 0
    for name in names[:1] + names[2:]:
        path = root / name
        if path.is_symlink() or not path.resolve().is_relative_to(root) or not path.is_file():
            raise UsageError(
                f"{name} is not a regular file inside {root}; push uploads nothing from outside the build folder."
            )
        size = path.stat().st_size
        if size > HUB_MAX_FILE_BYTES:
            raise UsageError(
                f"{name} is {size / 1e9:.1f} GB, over the Hub's 50 GB per-file limit; rebuild with a smaller --shard-mb."
            )
        total += size
    notes = []
    big = [n for n in names[2:] if (root / n).stat().st_size > HUB_RECOMMENDED_FILE_BYTES]
    if big:
        notes.append(f"{len(big)} shard(s) exceed the Hub's recommended 20 GB per file.")
    if len(names) > HUB_MAX_FILES_PER_FOLDER:
        raise UsageError(
            f"{len(names)} files in one folder exceed the Hub's 10,000 per folder; rebuild with larger shards."
        )
    notes.append(
        f"Hub limits: 50 GB per file (20 GB recommended), 10,000 files per folder; this upload: {len(names)} files, {total / 1e6:.1f} MB."
    )
    return PushPlan(root, repo, names, total, dataset_card(manifest, license, repo), notes)


def push(plan: PushPlan, *, private: bool = False, revision: str | None = None) -> None:
    """Write the card into the folder, then upload the planned files (token: the standard HF login)."""
    (plan.directory / CARD_NAME).write_text(plan.card)
    from huggingface_hub import HfApi

    # The network calls: create the repo if needed, then upload exactly the planned files.
    api = HfApi()
    api.create_repo(plan.repo, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=plan.repo,
        folder_path=plan.directory,
        repo_type="dataset",
        revision=revision,
        allow_patterns=plan.files,
        commit_message=f"lossyds push: {len(plan.files)} files",
    )


def hf_transform(directory: str | Path):
    """A function for `datasets.Dataset.with_transform` that decodes the bitstream column with lossyds.

    Rows whose bitstream came through as bytes (`.avif`, neural bitstreams, or any column
    loaded with decoding off) gain `image` (uint8 [C, H, W]) or `audio` (float32
    [channels, frames] at the source rate) decoded exactly as lossyds's loader does.
    """
    from . import codecs

    manifest = load_manifest(directory)
    codec = codecs.from_manifest(manifest["codec"])
    column = manifest["codec"]["extension"]
    field_name = "image" if manifest["modality"] == "image" else "audio"

    def transform(batch: dict[str, list]) -> dict[str, list]:
        decoded = []
        for value, meta in zip(batch[column], batch["json"]):
            data = value.get("bytes") if isinstance(value, dict) else value
            if not isinstance(data, (bytes, bytearray)):
                raise UsageError(
                    f"column {column!r} holds {type(value).__name__}, not bytes; load it with decoding off (datasets' decode=False on that column)."
                )
            decoded.append(codec.decode(bytes(data), meta))
        return {**batch, field_name: decoded}

    return transform
