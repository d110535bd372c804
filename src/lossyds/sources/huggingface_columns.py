"""Column roles of a Hugging Face dataset (lossyds.sources.huggingface): which column serves
which role, the types each role takes, and the fingerprint of the rows a build reads.

A role takes only a column whose values it can use, checked before anything is built: image
and mask an `Image` column, audio an `Audio` column (either may also be a plain {bytes, path}
struct: the stored file), label a `ClassLabel`, integer, boolean or string column, text a
string column. A string label column's values are the class names; their ids are positions in
the sorted list of the distinct names among the rows built (recorded as `label_names`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import UsageError

ROLES = ("image", "audio", "label", "mask", "text")
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_text")
MASK_COLUMNS = ("annotation", "mask", "label", "segmentation", "semantic_segmentation", "seg", "labels")
STRINGS = ("string", "large_string")
INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")
NEEDS = {
    "image": "an Image column",
    "mask": "an Image column",
    "audio": "an Audio column",
    "label": "a ClassLabel, integer or string column",
    "text": "a string column",
}


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


def kind_of(feature: Any) -> str:
    """A feature's type as a message names it: ClassLabel, Image, Audio, string, float64, struct, ..."""
    if isinstance(feature, dict):
        return "struct"
    dtype = getattr(feature, "dtype", None)
    name = type(feature).__name__
    return dtype if name == "Value" and isinstance(dtype, str) else name


def fits(datasets, role: str, feature: Any) -> bool:
    """Whether a column of this feature type can serve the role (see the module's docstring)."""
    stored_file = isinstance(feature, dict) and "bytes" in feature
    if role in ("image", "mask"):
        return isinstance(feature, datasets.Image) or stored_file
    if role == "audio":
        return isinstance(feature, datasets.Audio) or stored_file
    if role == "label":
        return isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype in (*INTEGERS, *STRINGS)
        )
    return isinstance(feature, datasets.Value) and feature.dtype in STRINGS


def check_roles(datasets, roles: dict[str, str], features: dict[str, Any], path: str) -> None:
    """Refuse, in one sentence, a --column naming a missing column or one of the wrong type."""
    for role, column in roles.items():
        if column not in features:
            raise UsageError(f"column {column!r} (for {role}) is not in {path}; its columns: {', '.join(features)}.")
        if not fits(datasets, role, features[column]):
            kind = kind_of(features[column])
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            raise UsageError(f"column {column!r} is {article} {kind} column; the {role} role needs {NEEDS[role]}.")


def role_columns(datasets, roles: dict[str, str], features: dict[str, Any], modality: str, path: str) -> dict[str, str]:
    """{role: column}: the --column roles, then the rest found from the feature types."""
    check_roles(datasets, roles, features, path)
    found = dict(roles)
    images = [n for n, f in features.items() if isinstance(f, datasets.Image) and n not in found.values()]
    audios = [n for n, f in features.items() if isinstance(f, datasets.Audio) and n not in found.values()]
    if modality == "image" and "image" not in found and images:
        preferred = [n for n in images if n.lower() in ("image", "img", "photo", "picture")]
        found["image"] = (preferred or [n for n in images if n.lower() not in MASK_COLUMNS] or images)[0]
    if modality == "image" and "mask" not in found:
        masks = [n for n in images if n != found.get("image")]
        named = [n for n in masks if n.lower() in MASK_COLUMNS]
        if named or masks:
            found["mask"] = (named or masks)[0]
    if modality == "audio" and "audio" not in found and audios:
        found["audio"] = audios[0]
    if "label" not in found:
        labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if labels:
            found["label"] = labels[0]
    if "text" not in found:
        texts = [n for n, f in features.items() if fits(datasets, "text", f) and n.lower() in TEXT_COLUMNS]
        if texts:
            found["text"] = texts[0]
    if modality not in found:
        raise UsageError(
            f"{path} has no {modality} column (its columns: {', '.join(features)}); "
            f"name it with --column {modality}=NAME."
        )
    return found


def label_targets(values: list[Any], names: list[str] | None) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Each row's label targets ({} when unlabelled: None, or a negative id such as ClassLabel's
    -1) and, for a string column, its class names (sorted distinct values of these rows)."""
    strings = sorted({v for v in values if isinstance(v, str)})
    if strings:
        ids = {name: index for index, name in enumerate(strings)}
        return [{} if v is None else {"label": ids[v], "class_name": v} for v in values], strings
    targets = []
    for value in values:
        target: dict[str, Any] = {}
        if value is not None and int(value) >= 0:
            target["label"] = int(value)
            if names is not None and target["label"] < len(names):
                target["class_name"] = names[target["label"]]
        targets.append(target)
    return targets, None


def rows_fingerprint(table: Any, columns: dict[str, str], first: int, end: int, names: list[str] | None) -> str:
    """sha256 of what a build reads: the role columns' stored values in rows [first, end) of
    `table` and the class names. It depends on the values only, not on how they were read (a
    stream's rows or a whole split's), so streamed and read-whole builds record the same one."""
    digest = hashlib.sha256()
    _feed(digest, [sorted(columns.items()), names])
    for _role, column in sorted(columns.items()):
        cells = table.column(column)
        for start in range(first, end, 256):
            _feed(digest, cells.slice(start, min(256, end - start)).to_pylist())
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Feed a value in a form with one reading: type tag, length, then the content."""
    if isinstance(value, (bytes, bytearray)):
        digest.update(b"b%d:" % len(value))
        digest.update(value)
    elif isinstance(value, str):
        _feed_tagged(digest, b"s", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, dict):
        digest.update(b"d%d:" % len(value))
        for key, item in value.items():
            _feed(digest, str(key))
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(b"l%d:" % len(value))
        for item in value:
            _feed(digest, item)
    else:  # None, bool, int, float, dates: their repr is exact
        _feed_tagged(digest, b"r", repr(value).encode())


def _feed_tagged(digest: Any, tag: bytes, data: bytes) -> None:
    digest.update(tag + b"%d:" % len(data))
    digest.update(data)
