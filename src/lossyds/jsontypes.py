"""The value types of a build's KEY.json members, folded into one type, so the dataset card can declare them.

A type is one of "null", "bool", "int64", "float64", "string", {"struct": {field: type}},
{"list": item type}, or "mixed" (values no single type holds, e.g. a string in one record
and a number in another). `unify` gives the narrowest type two types fit: null fits every
type, int64 widens to float64, structs take the union of their fields (a field a record
lacks is null there), lists unify their items. The build folds every record's type in
(journal, then manifest `json_types`), so the card declares what every record holds rather
than what its first few hold: Hugging Face datasets infers types from five rows otherwise.
"""

from __future__ import annotations

from typing import Any

NULL = "null"
MIXED = "mixed"


def type_of(value: Any) -> Any:
    """The type (module docstring) of one JSON value."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return {"struct": {str(k): type_of(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        item: Any = NULL
        for element in value:
            item = unify(item, type_of(element))
        return {"list": item}
    return MIXED


def unify(a: Any, b: Any) -> Any:
    """The narrowest type that holds values of types `a` and `b`."""
    if a == b:
        return a
    if a == NULL:
        return b
    if b == NULL:
        return a
    if isinstance(a, str) and isinstance(b, str) and {a, b} == {"int64", "float64"}:
        return "float64"
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        if "struct" in a:
            fields = dict(a["struct"])
            for name, kind in b["struct"].items():
                fields[name] = unify(fields.get(name, NULL), kind)
            return {"struct": fields}
        return {"list": unify(a["list"], b["list"])}
    return MIXED


def declared(kind: Any) -> Any:
    """The type as a dataset card can declare it, or None when it cannot: Hugging Face datasets
    holds no struct without fields, so fields that are always `{}` are left out (a row then
    lacks them); a mixed type anywhere means no declaration at all."""
    if kind == MIXED:
        return None
    if isinstance(kind, dict) and "struct" in kind:
        fields = {}
        for name, field_kind in kind["struct"].items():
            if field_kind == {"struct": {}}:
                continue
            inner = declared(field_kind)
            if inner is None:
                return None
            fields[name] = inner
        return {"struct": fields} if fields else None
    if isinstance(kind, dict):
        item = declared(kind["list"]) if kind["list"] != {"struct": {}} else None
        return {"list": item} if item is not None else None
    return kind


def yaml_field(name: str, kind: Any) -> dict[str, Any]:
    """One entry of a dataset card's `dataset_info.features` list (datasets' YAML form of
    Features) for a type `declared` returned."""
    if isinstance(kind, dict) and "struct" in kind:
        return {"name": name, "struct": [yaml_field(k, v) for k, v in sorted(kind["struct"].items())]}
    if isinstance(kind, dict):
        return {"name": name, "list": _yaml_item(kind["list"])}
    return {"name": name, "dtype": kind}


def _yaml_item(kind: Any) -> Any:
    if isinstance(kind, dict) and "struct" in kind:
        return [yaml_field(k, v) for k, v in sorted(kind["struct"].items())]
    if isinstance(kind, dict):
        return {"list": _yaml_item(kind["list"])}
    return kind
