"""Hugging Face datasets: `--dataset hf:NAME_OR_PATH [--hf-config C] --split 'validation[:1000]'`.

NAME_OR_PATH is anything `datasets` opens: a Hub id (from the local cache, or the network
when it is allowed), a local dataset folder or data files (parquet, arrow, csv+files, ...),
or a folder written by `save_to_disk`. The split takes datasets' own slicing syntax
(`validation`, `validation[:1000]`, `train[10:20]`, `train[:5%]`), resolved by
`datasets.ReadInstruction`, so the rows are the ones `load_dataset(..., split=...)` gives.

Roles come from the feature types: the first `Image` column is the image (a second one is
the segmentation `mask`), the first `Audio` column the audio, a `ClassLabel` column the
`label` (with its `class_name`), and a string column named like a transcript (`text`,
`sentence`, `transcription`, ...) the `text`. `--column ROLE=NAME[,ROLE=NAME]` overrides
(roles: image, audio, label, mask, text). Images and audio are read as the bytes the
dataset stores, not decoded by `datasets`: lossyds decodes them by its own rules (audio at
its file's own rate; a 48 kHz MP3 is decoded once, then encoded) and counts those bytes as
the source bits. A mask is stored as its PNG bytes when it is a PNG (pixel-identical), else
losslessly re-encoded as PNG.

`--hf-streaming` reads a Hub dataset as a stream and keeps only the selected rows (in
memory, as an arrow table), so a 150 GB training split is never downloaded whole for a
`[:1000]` slice. The dataset's fingerprint (and the Hub revision where known) goes into
the build's settings: a resumed build refuses a changed source.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

from ..errors import SourceError, UsageError
from ..options import Option
from ..types import SourceSample
from .base import Source, SourceRef, decode_audio, decode_image, safe_key

ROLES = ("image", "audio", "label", "mask", "text")
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_text")
MASK_COLUMNS = ("annotation", "mask", "label", "segmentation", "semantic_segmentation", "seg", "labels")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SPLIT = re.compile(r"^\s*([\w.-]+)\s*(\[.*\])?\s*$")


def parse_columns(text: str | None) -> dict[str, str]:
    """'image=img,label=fine_label' -> {'image': 'img', 'label': 'fine_label'}."""
    roles: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        role, equals, column = (part.strip() for part in pair.partition("="))
        if not equals or role not in ROLES or not column:
            raise UsageError(
                f"column takes ROLE=NAME pairs with ROLE one of {', '.join(ROLES)} (got {pair.strip()!r})."
            )
        roles[role] = column
    return roles


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise UsageError(
            f"hf: datasets need the Hugging Face datasets package: pip install 'lossyds[hub]' ({exc})."
        ) from None
    return datasets


class HuggingFaceSource(Source):
    name = "hf"
    splits = ()
    options = (
        Option("hf_config", str, "Configuration (subset) of a hf: dataset, as load_dataset's second argument."),
        Option(
            "column",
            str,
            "Column roles of a hf: dataset, ROLE=NAME[,ROLE=NAME] (roles: image, audio, label, mask, text).",
        ),
        Option(
            "hf_revision", str, "Hub revision of a hf: dataset (a branch, tag or commit; e.g. refs/convert/parquet)."
        ),
        Option("hf_streaming", bool, "Read a hf: Hub dataset as a stream, keeping only the selected rows.", False),
    )

    def __init__(self, *, path: str, root: str | Path | None, split: str | None, modality: str, **options: Any):
        if not path:
            raise UsageError("name the Hugging Face dataset: --dataset hf:NAME_OR_PATH.")
        self.path = path
        self.name = f"hf:{path}"  # type: ignore[misc]  (the instance's name: what the manifest records)
        # --root, when given, is where the data is read from (a local copy of the Hub dataset
        # NAME: save_to_disk folder or data files); the manifest still names NAME.
        self.location = str(Path(root).expanduser()) if root is not None else path
        super().__init__(root=root, split=split, modality=modality, **options)
        match = _SPLIT.match(self.split or "")
        if match is None or "+" in (self.split or ""):
            raise UsageError(f"split {self.split!r} is not one split with an optional slice, e.g. 'validation[:1000]'.")
        self.base_split = match.group(1)
        self.roles = parse_columns(self.options["column"])
        self._table: Any = None
        self._columns: dict[str, str] = {}
        self._license: str | None = None
        self._spool_offset = 0
        self._spooled_rows = False  # the table holds only the selected rows (a stream's)

    def resolve_root(self, root: str | Path | None) -> Path:
        local = Path(self.location).expanduser()
        if root is not None and not local.exists():
            raise UsageError(f"--root {root} does not exist (for hf:{self.path}, a local copy of the dataset).")
        return local.resolve() if local.exists() else Path(self.location)

    def default_split(self, modality: str) -> str | None:
        return "train"

    # -- opening --------------------------------------------------------------------

    def _open(self) -> Any:
        """The whole base split as a pyarrow-backed datasets Table (rows addressed absolutely)."""
        if self._table is not None:
            return self._table
        datasets = _datasets()
        local = Path(self.location).expanduser()
        try:
            if local.is_dir() and any((local / name).is_file() for name in ("state.json", "dataset_dict.json")):
                loaded = datasets.load_from_disk(str(local))
                if isinstance(loaded, datasets.DatasetDict):
                    if self.base_split not in loaded:
                        raise UsageError(f"{self.path} has no split {self.base_split!r}; it has: {', '.join(loaded)}.")
                    loaded = loaded[self.base_split]
            elif self.options["hf_streaming"]:
                loaded = self._spooled(datasets)
                self._spooled_rows = True
            else:
                loaded = datasets.load_dataset(**self._hub_arguments(), split=self.base_split)
        except UsageError:
            raise
        except (ValueError, FileNotFoundError, ConnectionError, OSError, KeyError) as exc:
            raise UsageError(f"datasets cannot open {self.location!r} split {self.base_split!r}: {exc}") from None
        self._features = loaded.features
        self._fingerprint = getattr(loaded, "_fingerprint", None)
        self._license = (loaded.info.license or None) if loaded.info is not None else None
        self._columns = self._role_columns(datasets, loaded.features)
        # The arrow table itself: rows are read by absolute index, without datasets decoding
        # them. It pickles to worker processes by file reference (memory-mapped) or by value
        # (a stream's selected rows).
        self._table = loaded.flatten_indices().data if loaded._indices is not None else loaded.data
        return self._table

    def _hub_arguments(self) -> dict[str, Any]:
        """load_dataset's name, configuration and revision: a local copy (--root) is read as
        it is, holding the one configuration the run names."""
        if self.location != self.path:
            return {"path": self.location}
        return {"path": self.path, "name": self.options["hf_config"], "revision": self.options["hf_revision"]}

    def _spooled(self, datasets) -> Any:
        """Stream the base split and keep only the selected rows, in memory (an arrow table)."""
        stream = datasets.load_dataset(**self._hub_arguments(), split=self.base_split, streaming=True)
        total = None
        if stream.info is not None and stream.info.splits and self.base_split in stream.info.splits:
            total = stream.info.splits[self.base_split].num_examples
        first, end = self._bounds(total)
        self._spool_offset = first
        if stream.features is None:
            raise UsageError(
                f"the stream of {self.location!r} does not describe its columns; read it without --hf-streaming."
            )
        for name, feature in stream.features.items():
            if isinstance(feature, (datasets.Image, datasets.Audio)):
                stream = stream.cast_column(name, type(feature)(decode=False))
        selected = stream.skip(first).take(end - first) if end is not None else stream.skip(first)
        features = selected.features
        rows = list(selected)  # only the selected rows, never the whole split
        return datasets.Dataset.from_list(rows, features=features)

    def _bounds(self, total: int | None) -> tuple[int, int | None]:
        """(first row, end row or None for 'to the end') of the split's slice, in a base split
        of `total` rows (None: unknown, as for some streams: then only [a:b] row slices)."""
        if self.split == self.base_split:
            return 0, total
        if total is not None:
            try:
                (absolute,) = _datasets().ReadInstruction.from_spec(self.split).to_absolute({self.base_split: total})
            except (ValueError, AssertionError) as exc:
                raise UsageError(f"split {self.split!r} is not in datasets' slicing syntax: {exc}") from None
            return absolute.from_, absolute.to
        match = re.fullmatch(r"\s*[\w.-]+\s*\[\s*(\d*)\s*:\s*(\d*)\s*\]\s*", self.split or "")
        if match is None:
            raise UsageError(
                f"split {self.split!r}: this stream does not say how many rows it has, so slice it by rows, e.g. [:1000]."
            )
        return int(match.group(1) or 0), (int(match.group(2)) if match.group(2) else None)

    def _role_columns(self, datasets, features: dict[str, Any]) -> dict[str, str]:
        for role, column in self.roles.items():
            if column not in features:
                raise UsageError(
                    f"column {column!r} (for {role}) is not in {self.path}; its columns: {', '.join(features)}."
                )
        found = dict(self.roles)
        images = [n for n, f in features.items() if isinstance(f, datasets.Image) and n not in found.values()]
        audios = [n for n, f in features.items() if isinstance(f, datasets.Audio) and n not in found.values()]
        if self.modality == "image" and "image" not in found and images:
            preferred = [n for n in images if n.lower() in ("image", "img", "photo", "picture")]
            found["image"] = (preferred or [n for n in images if n.lower() not in MASK_COLUMNS] or images)[0]
        if self.modality == "image" and "mask" not in found:
            masks = [n for n in images if n != found.get("image")]
            named = [n for n in masks if n.lower() in MASK_COLUMNS]
            if named or masks:
                found["mask"] = (named or masks)[0]
        if self.modality == "audio" and "audio" not in found and audios:
            found["audio"] = audios[0]
        if "label" not in found:
            labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
            if labels:
                found["label"] = labels[0]
        if "text" not in found:
            texts = [
                n
                for n, f in features.items()
                if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string") and n.lower() in TEXT_COLUMNS
            ]
            if texts:
                found["text"] = texts[0]
        if self.modality not in found:
            raise UsageError(
                f"{self.path} has no {self.modality} column (its columns: {', '.join(features)}); "
                f"name it with --column {self.modality}=NAME."
            )
        return found

    # -- the Source interface -----------------------------------------------------------

    @property
    def license(self) -> str | None:  # type: ignore[override]
        return self._license

    def tasks(self) -> list[str]:
        self._open()
        if self.modality == "audio":
            return ["automatic-speech-recognition"] if "text" in self._columns else []
        if "mask" in self._columns:
            return ["image-segmentation"]
        return ["image-classification"] if "label" in self._columns else []

    def records(self) -> list[SourceRef]:
        table = self._open()
        if self._spooled_rows:
            offset, first, end = self._spool_offset, 0, table.num_rows
        else:
            offset = 0
            first, end = self._bounds(table.num_rows)
            end = table.num_rows if end is None else min(end, table.num_rows)
        count = max(0, end - first)
        labels = (
            table.column(self._columns["label"]).slice(first, count).to_pylist() if "label" in self._columns else None
        )
        texts = table.column(self._columns["text"]).slice(first, count).to_pylist() if "text" in self._columns else None
        names = None
        if labels is not None:
            feature = self._features[self._columns["label"]]
            names = getattr(feature, "names", None)
        self.options = {
            **self.options,
            "columns": dict(sorted(self._columns.items())),
            "fingerprint": self._fingerprint,
            "rows": [first + offset, end + offset],
        }
        refs = []
        for position in range(count):
            row = first + position
            targets: dict[str, Any] = {}
            if labels is not None and labels[position] is not None and labels[position] >= 0:  # -1: unlabelled
                targets["label"] = int(labels[position])
                if names is not None and 0 <= targets["label"] < len(names):
                    targets["class_name"] = names[targets["label"]]
            if texts is not None and texts[position] is not None:
                targets["text"] = str(texts[position])
            refs.append(SourceRef(safe_key(f"{self.base_split}-{row + offset:08d}"), str(row), targets))
        return refs

    def load(self, record: SourceRef) -> SourceSample:
        table = self._open()
        row = int(record.path)
        sample = SourceSample(key=record.key, targets=dict(record.targets), source_path=f"{self.path}#{row}")
        column = self._columns[self.modality]
        data, where = self._file_bytes(table, column, row)
        digest = hashlib.sha256(data)
        if self.modality == "image":
            sample.image = decode_image(data, where)
        else:
            sample.audio, sample.sample_rate, sample.audio_bit_depth = decode_audio(data, where)
        total = len(data)
        if "mask" in self._columns:
            mask, mask_where = self._file_bytes(table, self._columns["mask"], row)
            sample.attachments["mask.png"] = mask if mask.startswith(PNG_SIGNATURE) else _as_png(mask, mask_where)
            digest.update(mask)
            total += len(mask)
        sample.source_bytes = total
        sample.source_sha256 = digest.hexdigest()
        return sample

    def _file_bytes(self, table: Any, column: str, row: int) -> tuple[bytes, str]:
        """The stored file of an Image/Audio cell: its bytes, or the file its path names."""
        cell = table.column(column)[row].as_py()
        where = f"{column} of row {row}"
        if not isinstance(cell, dict):
            raise SourceError(f"{where} is not an Image/Audio cell")
        if cell.get("bytes"):
            return cell["bytes"], where
        if cell.get("path"):
            try:
                return Path(cell["path"]).read_bytes(), where
            except OSError as exc:
                raise SourceError(f"{where} names {cell['path']}, which cannot be read: {exc.strerror}") from None
        raise SourceError(f"{where} is empty")


def _as_png(data: bytes, where: str) -> bytes:
    """A non-PNG mask file as a PNG of the same pixels (its mode kept: label values unchanged)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SourceError(f"cannot decode the mask {where}: {exc}") from None
    return buffer.getvalue()
