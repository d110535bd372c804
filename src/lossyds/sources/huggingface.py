"""Hugging Face datasets: `--dataset hf:NAME_OR_PATH [--hf-config C] --split 'validation[:1000]'`.

NAME_OR_PATH is anything `datasets` opens: a Hub id (from the local cache, or the network
when it is allowed), a local dataset folder or data files (parquet, arrow, csv+files, ...),
or a folder written by `save_to_disk`. The split takes datasets' own slicing syntax
(`validation`, `validation[:1000]`, `train[10:20]`, `train[:5%]`), resolved by
`datasets.ReadInstruction`, so the rows are the ones `load_dataset(..., split=...)` gives.
Keys and recorded rows are numbered in the base split (`validation-00000362`).

A `save_to_disk` folder of one split (`load_dataset(..., split="validation").save_to_disk(P)`)
records the split it was saved from, and serves only that split: `validation`, or a slice
of it (`validation[2:7]`). A folder saved from a slice (`validation[2:7]`) keeps its rows'
numbers and serves only slices within them. A folder that records no split (a `Dataset`
made in memory) holds what datasets calls a split without a name: `train`.

The manifest, the card and each sample (`source.path`, `NAME#ROW`) record a Hub id or a
relative path as given, and any other local path by its last name (`/data/hf/beans` ->
`hf:beans`): an absolute local path never leaves the machine with a build.

Roles come from the feature types: the first `Image` column is the image (a second one is
the segmentation `mask`), the first `Audio` column the audio, a `ClassLabel` column the
`label` (with its `class_name`), and a string column named like a transcript (`text`,
`sentence`, `transcription`, ...) the `text`. `--column ROLE=NAME[,ROLE=NAME]` overrides
(roles: image, audio, label, mask, text); a column of a type its role cannot use is refused
before anything is built (lossyds.sources.huggingface_columns). Images and audio are read as
the bytes the dataset stores, not decoded by `datasets`: lossyds decodes them by its own
rules (audio at its file's own rate; a 48 kHz MP3 is decoded once, then encoded) and counts
those bytes as the source bits. A mask is stored as its PNG bytes when it is a PNG
(pixel-identical), else losslessly re-encoded as PNG.

`--hf-streaming` reads a Hub dataset as a stream and keeps only the selected rows (in
memory, as an arrow table), so a 150 GB training split is never downloaded whole for a
`[:1000]` slice. It reads the same stored cells, so a streamed build's shards and manifest
are byte-identical to a build that reads the whole split. The fingerprint of the rows read
(a sha256 of the role columns' stored values) goes into the build's settings: a resumed
build refuses a changed source.
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
from .huggingface_columns import ROLES, label_targets, parse_columns, role_columns, rows_fingerprint

__all__ = ["ROLES", "HuggingFaceSource", "parse_columns", "recorded_name"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SPLIT = re.compile(r"^\s*([\w.-]+)\s*(\[.*\])?\s*$")


def recorded_name(path: str) -> str:
    """What the manifest, the card and each sample record for NAME_OR_PATH: a Hub id, or a path
    relative to the working folder, as given; any other local path (absolute, under ~, or
    through ..) by its last name only, so no local folder's location leaves the machine."""
    local = Path(path).expanduser()
    if not local.exists():
        return path
    if local.is_absolute() or path.startswith("~") or ".." in local.parts or local.as_posix() == ".":
        return local.resolve().name or path
    return local.as_posix()


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
        self.recorded = recorded_name(path)
        self.name = f"hf:{self.recorded}"  # type: ignore[misc]  (the instance's name: what the manifest records)
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
        self._offset = 0  # the base split's row number of the table's first row
        self._rows = (0, 0)  # the selected rows [first, end), numbered in the base split
        self._saved_as: str | None = None  # the slice a save_to_disk folder of one split was saved from

    def configure(self, options: dict[str, Any]) -> dict[str, Any]:
        # Streaming is how the rows are read, not which rows: a streamed build records the same
        # settings, and so writes the same manifest, as one that reads the whole split.
        self.streaming = bool(options.pop("hf_streaming"))
        return options

    def resolve_root(self, root: str | Path | None) -> Path:
        local = Path(self.location).expanduser()
        if root is not None and not local.exists():
            raise UsageError(f"--root {root} does not exist (for hf:{self.path}, a local copy of the dataset).")
        return local.resolve() if local.exists() else Path(self.location)

    def default_split(self, modality: str) -> str | None:
        return "train"

    # -- opening --------------------------------------------------------------------

    def _open(self) -> Any:
        """The base split's rows as an arrow table (the whole split, or the rows a stream or a
        save_to_disk folder holds), read without datasets decoding them."""
        if self._table is not None:
            return self._table
        datasets = _datasets()
        try:
            table, features, info = self._load(datasets)
        except UsageError:
            raise
        except (ValueError, FileNotFoundError, ConnectionError, OSError, KeyError) as exc:
            raise UsageError(f"datasets cannot open {self.location!r} split {self.base_split!r}: {exc}") from None
        self._features = features
        self._license = (info.license or None) if info is not None else None
        self._columns = role_columns(datasets, self.roles, features, self.modality, self.path)
        # It pickles to worker processes by file reference (memory-mapped) or by value (a stream's rows).
        self._table = table
        return table

    def _load(self, datasets) -> tuple[Any, Any, Any]:
        """(table, features, info) of the base split; sets the table's first row and the selection."""
        local = Path(self.location).expanduser()
        if local.is_dir() and any((local / name).is_file() for name in ("state.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if self.base_split not in loaded:
                    raise UsageError(f"{self.path} has no split {self.base_split!r}; it has: {', '.join(loaded)}.")
                loaded = loaded[self.base_split]
                total = loaded.num_rows
            else:
                self._offset, total = self._held_rows(datasets, loaded)
        elif self.streaming:
            return self._spooled(datasets)
        else:
            loaded = datasets.load_dataset(**self._hub_arguments(), split=self.base_split)
            total = loaded.num_rows
        table = loaded.flatten_indices().data if loaded._indices is not None else loaded.data
        self._rows = self._selected(total, table.num_rows)
        return table, loaded.features, loaded.info

    def _held_rows(self, datasets, loaded: Any) -> tuple[int, int | None]:
        """(the base split's row number of the first row, the base split's rows or None when
        unknown) of a save_to_disk folder of one split, which must be the split asked for. The
        folder records the split it was saved from (`validation`, `validation[2:7]`); one that
        records none holds what datasets calls a split without a name: 'train'."""
        if loaded.split is None:
            if self.base_split != "train":
                raise UsageError(
                    f"{self.path} does not record which split it holds, which datasets calls 'train'; "
                    f"build it with split 'train' (or a slice such as 'train[:100]'), not {self.split!r}."
                )
            return 0, loaded.num_rows
        saved = str(loaded.split)
        match = _SPLIT.match(saved)
        if match is None or match.group(1) != self.base_split:
            raise UsageError(f"{self.path} holds only split {saved!r} (saved by save_to_disk), not {self.split!r}.")
        if not match.group(2):
            return 0, loaded.num_rows
        self._saved_as = saved
        splits = loaded.info.splits if loaded.info is not None else None
        if splits and self.base_split in splits:
            total = splits[self.base_split].num_examples
            (absolute,) = datasets.ReadInstruction.from_spec(saved).to_absolute({self.base_split: total})
            return absolute.from_, total
        start = re.fullmatch(r"\[\s*(\d*)\s*:.*\]", match.group(2))
        if start is None:
            raise UsageError(
                f"{self.path} holds {saved!r} of a split whose length it does not record, so its row numbers are "
                f"unknown; save it from a slice of row numbers such as '{self.base_split}[100:200]'."
            )
        return int(start.group(1) or 0), None

    def _selected(self, total: int | None, held: int) -> tuple[int, int]:
        """The rows [first, end) the split asks for, numbered in the base split, which must lie
        within the `held` rows of the table (a sliced save_to_disk folder holds only its slice)."""
        first, end = self._bounds(total)
        stop = self._offset + held
        end = stop if end is None else end
        if self._saved_as is not None and (first < self._offset or end > stop):
            raise UsageError(
                f"{self.path} holds rows {self._offset} to {stop - 1} of split {self.base_split!r} (saved as "
                f"{self._saved_as!r}); split {self.split!r} asks for rows {first} to {end - 1}."
            )
        return max(first, self._offset), max(min(end, stop), self._offset)

    def _hub_arguments(self) -> dict[str, Any]:
        """load_dataset's name, configuration and revision: a local copy (--root) is read as
        it is, holding the one configuration the run names."""
        if self.location != self.path:
            return {"path": self.location}
        return {"path": self.path, "name": self.options["hf_config"], "revision": self.options["hf_revision"]}

    def _spooled(self, datasets) -> tuple[Any, Any, Any]:
        """Stream the base split and keep only the selected rows, in memory (an arrow table)."""
        import pyarrow

        stream = datasets.load_dataset(**self._hub_arguments(), split=self.base_split, streaming=True)
        if stream.features is None:
            raise UsageError(
                f"the stream of {self.location!r} does not describe its columns; read it without --hf-streaming."
            )
        total = None
        if stream.info is not None and stream.info.splits and self.base_split in stream.info.splits:
            total = stream.info.splits[self.base_split].num_examples
        first, end = self._bounds(total)
        selected = stream.skip(first).take(end - first) if end is not None else stream.skip(first)
        # Arrow batches hold the cells as stored: datasets' own image and audio decoding (and
        # the libraries it needs) never runs, as when a whole split is read.
        tables = list(selected.with_format("arrow").iter(batch_size=256))
        table = (
            pyarrow.concat_tables(tables, promote_options="default")
            if tables
            else stream.features.arrow_schema.empty_table()
        )
        self._offset, self._rows = first, (first, first + table.num_rows)
        return table, stream.features, stream.info

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
                f"split {self.split!r}: this source does not say how many rows its split has, so slice it by rows, e.g. [:1000]."
            )
        return int(match.group(1) or 0), (int(match.group(2)) if match.group(2) else None)

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

    def refs(self) -> list[SourceRef]:
        table = self._open()
        first, end = self._rows
        start, count = first - self._offset, max(0, end - first)  # start: the table's row of `first`

        def column(role: str) -> list[Any]:
            if role not in self._columns:
                return [None] * count
            return table.column(self._columns[role]).slice(start, count).to_pylist()

        labels: list[dict[str, Any]] = [{}] * count
        names = strings = None  # the ClassLabel's names; a string label column's names
        if "label" in self._columns:
            names = getattr(self._features[self._columns["label"]], "names", None)
            labels, strings = label_targets(column("label"), names)
        fingerprint = rows_fingerprint(table, self._columns, start, start + count, strings or names)
        options = {**self.options, "columns": dict(sorted(self._columns.items())), "fingerprint": fingerprint}
        options["rows"] = [first, end]
        if strings is not None:
            options["label_names"] = strings
        self.options = options
        refs = []
        for position, text in enumerate(column("text")):
            targets = dict(labels[position])
            if text is not None:
                targets["text"] = str(text)
            row = first + position
            refs.append(SourceRef(safe_key(f"{self.base_split}-{row:08d}"), str(row), targets))
        return refs

    def load(self, record: SourceRef) -> SourceSample:
        table = self._open()
        row = int(record.path)  # numbered in the base split, as the key and the recorded path
        sample = SourceSample(key=record.key, targets=dict(record.targets), source_path=f"{self.recorded}#{row}")
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
        """The stored file of an Image/Audio cell of base-split row `row`: its bytes, or the file its path names."""
        cell = table.column(column)[row - self._offset].as_py()
        where = f"{column} of row {row}"
        if not isinstance(cell, dict):
            raise SourceError(f"{where} is not an Image/Audio cell")
        if cell.get("bytes"):
            return cell["bytes"], where
        if cell.get("path"):
            try:
                return Path(cell["path"]).read_bytes(), where
            except OSError as exc:
                # The file's name only: a local folder's location stays out of the manifest's skip reasons.
                name = Path(cell["path"]).name
                raise SourceError(f"{where} names {name}, which cannot be read: {exc.strerror}") from None
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
