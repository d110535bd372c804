"""Bring-your-own data: `imagefolder` (ROOT/[SPLIT/]CLASS/*.jpg) and `audiofolder` (ROOT/[SPLIT/]**/*.wav|flac|...).

imagefolder labels are class indices in sorted subfolder order (torchvision's ImageFolder rule).
audiofolder reads optional per-file targets from ROOT/[SPLIT/]metadata.jsonl, one
{"file_name": "relative/path.flac", ...targets} object per line (Hugging Face's audiofolder
rule); with a metadata file, a row naming a missing file and a file without a row are both
recorded as skipped samples with the reason. Without --split the files sit directly under ROOT.

Keys: the file's path below the split folder without its suffix, through `safe_key`
(`cats/写真.jpg` -> `cats-写真`). Files whose keys would be equal keep their suffix
(`anim.gif`, `anim.webp` -> `anim-gif`, `anim-webp`), and any still equal get a short
hash of their path (`a b.jpg`, `a-b.jpg` -> `a-b-1f3a9c2e`, ...): stable from build to build.

Symlinked folders and files are followed. A file reached by more than one path (a symlinked
class folder, a symlinked file) is read once: at its real path when that path is one of them,
else at its first path in sorted order; every other path is recorded as skipped, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import UsageError
from .base import Source, SourceRef, safe_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"}
METADATA_NAME = "metadata.jsonl"


def folder_keys(relatives: list[Path]) -> list[str]:
    """Distinct keys for distinct relative paths (see the module docstring for the rule)."""
    keys = [safe_key(str(path.with_suffix(""))) for path in relatives]
    counts = Counter(keys)
    keys = [safe_key(str(path)) if counts[key] > 1 else key for path, key in zip(relatives, keys)]
    counts = Counter(keys)
    return [
        f"{key}-{hashlib.sha256(path.as_posix().encode()).hexdigest()[:8]}" if counts[key] > 1 else key
        for path, key in zip(relatives, keys)
    ]


class _FolderSource(Source):
    splits = ()
    suffixes: set[str] = set()

    def split_dir(self) -> Path:
        folder = self.root / self.split if self.split else self.root
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder (check --root and --split).")
        return folder

    def files_under(self, folder: Path) -> list[Path]:
        """Files with one of `suffixes` below `folder`, sorted (symlinks followed; a link back to
        a folder it sits in is not, as it would loop)."""
        found = []
        chains = {str(folder): {os.path.realpath(folder)}}  # real folders from `folder` down to each walked one
        for top, dirs, names in os.walk(folder, followlinks=True):
            chain = chains.pop(top)
            for name in list(dirs):
                real = os.path.realpath(os.path.join(top, name))
                if real in chain:
                    dirs.remove(name)
                else:
                    chains[os.path.join(top, name)] = chain | {real}
            found += [Path(top, name) for name in names if Path(name).suffix.lower() in self.suffixes]
        return sorted(path for path in found if path.is_file())

    def refs_for(self, folder: Path, files: list[Path], targets_of) -> list[SourceRef]:
        """One SourceRef per file; a file also reached by another path becomes a skip record,
        unless this path is the file's real one (see the module docstring)."""
        relatives = [path.relative_to(folder) for path in files]
        base = folder.resolve()
        reals = [path.resolve() for path in files]
        kept: dict[Path, Path] = {}  # real file -> the path it is read at
        for inner, real in zip(relatives, reals):
            if real not in kept or (real == base / inner and real != base / kept[real]):
                kept[real] = inner
        refs = []
        for path, inner, real, key in zip(files, relatives, reals, folder_keys(relatives)):
            targets, problem = targets_of(inner)
            if kept[real] != inner:
                first = kept[real].as_posix()
                problem = (
                    f"{inner.as_posix()} is the same file as {first} (through a symlink); it is kept once, as {first}"
                )
            refs.append(SourceRef(key, path.relative_to(self.root).as_posix(), targets, problem=problem))
        return refs


class ImageFolderSource(_FolderSource):
    name = "imagefolder"
    modalities = ("image",)
    suffixes = IMAGE_SUFFIXES

    def tasks(self) -> list[str]:
        return ["image-classification"]

    def refs(self) -> list[SourceRef]:
        folder = self.split_dir()
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise UsageError(f"{folder} has no class subfolders (imagefolder expects ROOT/CLASS/IMAGE).")
        labels = {name: label for label, name in enumerate(classes)}
        files = [path for name in classes for path in self.files_under(folder / name)]
        return self.refs_for(
            folder, files, lambda inner: ({"label": labels[inner.parts[0]], "class_name": inner.parts[0]}, None)
        )


class AudioFolderSource(_FolderSource):
    name = "audiofolder"
    modalities = ("audio",)
    suffixes = AUDIO_SUFFIXES

    def refs(self) -> list[SourceRef]:
        folder = self.split_dir()
        files = self.files_under(folder)
        metadata = folder / METADATA_NAME
        if not metadata.is_file():
            return self.refs_for(folder, files, lambda inner: ({}, None))
        rows, lines = read_metadata(metadata)
        present = {path.relative_to(folder).as_posix() for path in files}
        missing = sorted(name for name in rows if name not in present)
        for name in missing:  # listed, absent: a skip record at the place the file would sort
            files.append(folder / name)
        files.sort()

        def targets_of(inner: Path) -> tuple[dict[str, Any], str | None]:
            name = inner.as_posix()
            if name in missing:
                return {}, f"{metadata.name}:{lines[name]} names {name}, which is not in {folder}"
            if name not in rows:
                return {}, f"{name} has no row in {metadata.name} (its targets are unknown)"
            return rows[name], None

        return self.refs_for(folder, files, targets_of)


def read_metadata(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """metadata.jsonl -> ({file name: targets}, {file name: line number}); a bad line, or a
    file_name that is absolute or holds `..`, is a UsageError naming FILE:LINE. A UTF-8
    byte-order mark at the start is accepted."""
    rows: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # editors may start the file with a BOM
        except UnicodeDecodeError as exc:
            raise UsageError(f"{where} is not UTF-8 text (byte {exc.start + 1} of the line).") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno}).") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where} is not a JSON object with a file_name.")
        name = row.pop("file_name", None)
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: file_name must be a file path as a string (got {json.dumps(name)}).")
        if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or ".." in Path(name).parts:
            raise UsageError(f"{where}: file_name {name!r} leaves the folder; give the path relative to {path.parent}.")
        name = Path(name).as_posix()
        if name in rows:
            raise UsageError(f"{where} repeats file_name {name!r} (first on line {lines[name]}).")
        rows[name], lines[name] = row, number
    return rows, lines
