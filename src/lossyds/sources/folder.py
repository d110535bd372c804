"""Bring-your-own data: `imagefolder` (ROOT/[SPLIT/]CLASS/*.jpg) and `audiofolder` (ROOT/[SPLIT/]**/*.wav|flac|...).

imagefolder labels are class indices in sorted subfolder order (torchvision's ImageFolder rule).
audiofolder reads optional per-file targets from ROOT/[SPLIT/]metadata.jsonl, one
{"file_name": "relative/path.flac", ...targets} object per line (Hugging Face's audiofolder rule).
Without --split the files sit directly under ROOT.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from .base import Source, SourceRef, safe_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"}


class _FolderSource(Source):
    splits = ()

    def split_dir(self) -> Path:
        folder = self.root / self.split if self.split else self.root
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder (check --root and --split).")
        return folder

    def key_for(self, relative: Path) -> str:
        return safe_key(str(relative.with_suffix("")))


class ImageFolderSource(_FolderSource):
    name = "imagefolder"
    modalities = ("image",)

    def tasks(self) -> list[str]:
        return ["image-classification"]

    def records(self) -> list[SourceRef]:
        folder = self.split_dir()
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise UsageError(f"{folder} has no class subfolders (imagefolder expects ROOT/CLASS/IMAGE).")
        records = []
        for label, class_name in enumerate(classes):
            for path in sorted((folder / class_name).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    relative = path.relative_to(self.root)
                    records.append(
                        SourceRef(
                            self.key_for(path.relative_to(folder)),
                            str(relative),
                            {"label": label, "class_name": class_name},
                        )
                    )
        return records


class AudioFolderSource(_FolderSource):
    name = "audiofolder"
    modalities = ("audio",)

    def records(self) -> list[SourceRef]:
        folder = self.split_dir()
        targets: dict[str, dict] = {}
        metadata = folder / "metadata.jsonl"
        if metadata.is_file():
            for number, line in enumerate(metadata.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    targets[str(Path(row.pop("file_name")))] = row
                except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                    raise UsageError(f"{metadata}:{number} is not a JSON object with a file_name: {exc}") from exc
        records = []
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
                inner = path.relative_to(folder)
                records.append(
                    SourceRef(self.key_for(inner), str(path.relative_to(self.root)), targets.get(str(inner), {}))
                )
        return records
