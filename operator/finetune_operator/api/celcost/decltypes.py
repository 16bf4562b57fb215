"""CEL declaration types of a structural schema, with the sizes the estimator reasons about.

A port of `SchemaDeclType` (k8s.io/apiserver/pkg/cel/common/schemas.go) and the limits in
k8s.io/apiserver/pkg/cel/limits.go: every list, map and string gets `max_elements` (its maxItems /
maxProperties / maxLength*4, or the worst case that fits in one 3 MiB request), and every type its
`min_serialized_size`, the smallest JSON it can take — the divisor of that worst case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
MAX_DURATION_SIZE_JSON = 32
MAX_DATETIME_SIZE_JSON = 32
MIN_DURATION_SIZE_JSON = 3
JSON_DATE_SIZE = 12
MIN_DATETIME_SIZE_JSON = 21
MIN_STRING_SIZE = 2
MIN_BOOL_SIZE = 4
MIN_NUMBER_SIZE = 1

Schema = Mapping[str, Any]


@dataclass(eq=False)
class DeclType:
    """One node of the CEL type tree (`apiservercel.DeclType`)."""

    kind: str  # object, list, map, string, bytes, bool, int, double, duration, timestamp, dyn
    min_serialized_size: int
    max_elements: int = 0
    fields: dict[str, DeclType] = field(default_factory=dict)
    elem: DeclType | None = None
    key: DeclType | None = None


STRING = DeclType("string", MIN_STRING_SIZE)
BOOL = DeclType("bool", MIN_BOOL_SIZE)
INT = DeclType("int", MIN_NUMBER_SIZE)
DOUBLE = DeclType("double", MIN_NUMBER_SIZE)

_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
    "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip
_EXPAND = re.compile(r"(__|[-./]|[^a-zA-Z0-9\-./_])")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}


def escape(name: str) -> str | None:
    """A property name as CEL sees it (`apiservercel.Escape`), or None when it cannot be escaped."""
    if not name or name[0].isdigit():
        return None
    if name in _RESERVED:
        return f"__{name}__"
    bad = False

    def sub(m: re.Match[str]) -> str:
        nonlocal bad
        if m.group(0) in _ESCAPES:
            return _ESCAPES[m.group(0)]
        bad = True
        return ""

    out = _EXPAND.sub(sub, name)
    return None if bad else out


def _zero_if_negative(v: int) -> int:
    return max(v, 0)


def max_cardinality(min_size: int) -> int:
    """Worst-case repetitions of data of `min_size` bytes in one request (compilation.go maxCardinality)."""
    return MAX_REQUEST_SIZE_BYTES // (min_size + 1)


def _max_string_length_per_request(s: Schema) -> int:
    if s.get("x-kubernetes-int-or-string"):
        return MAX_REQUEST_SIZE_BYTES - 2
    return {
        "duration": MAX_DURATION_SIZE_JSON,
        "date": JSON_DATE_SIZE,
        "date-time": MAX_DATETIME_SIZE_JSON,
    }.get(
        s.get("format", ""),
        MAX_REQUEST_SIZE_BYTES - 2,  # subtract 2 for the quotes
    )


def _max_enum_length(s: Schema) -> int:
    return max(
        (len(v.encode()) for v in s.get("enum") or [] if isinstance(v, str)), default=0
    )  # Go len: bytes


def with_type_and_object_meta(s: Schema) -> Schema:
    """Resource roots always expose kind, apiVersion, metadata.name and metadata.generateName (unbounded)."""
    props = s.get("properties") or {}
    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {}
    if (
        props.get("kind", {}).get("type") == "string"
        and props.get("apiVersion", {}).get("type") == "string"
        and meta.get("type") == "object"
        and meta_props.get("name", {}).get("type") == "string"
        and meta_props.get("generateName", {}).get("type") == "string"
    ):
        return s
    string = {"type": "string"}
    new_props = dict(props)
    new_props.update(
        kind=string,
        apiVersion=string,
        metadata={"type": "object", "properties": {"name": string, "generateName": string}},
    )
    return {**s, "properties": new_props}


def schema_decl_type(s: Schema, is_root: bool = False) -> DeclType | None:
    """The CEL type of a structural schema, or None when the schema is not exposed to CEL."""
    if s.get("x-kubernetes-int-or-string"):
        # the smallest serialized int-or-string is 0; a maxLength bounds it like a string
        if s.get("maxLength") is not None:
            return DeclType("dyn", 1, max_elements=_zero_if_negative(int(s["maxLength"])) * 4)
        return DeclType("dyn", 1, max_elements=_max_string_length_per_request(s))
    if is_root:
        s = with_type_and_object_meta(s)
    kind = s.get("type")
    if kind == "array":
        items = s.get("items")
        if not isinstance(items, Mapping):
            return None
        item_type = schema_decl_type(items, bool(items.get("x-kubernetes-embedded-resource")))
        if item_type is None:
            return None
        if s.get("maxItems") is not None:
            max_items = _zero_if_negative(int(s["maxItems"]))
        else:  # subtract 2 for [ and ], one comma per item
            max_items = (MAX_REQUEST_SIZE_BYTES - 2) // (item_type.min_serialized_size + 1)
        return DeclType("list", 2, max_elements=max_items, elem=item_type)
    if kind == "object":
        extra = s.get("additionalProperties")
        if isinstance(extra, Mapping):
            value_type = schema_decl_type(extra, bool(extra.get("x-kubernetes-embedded-resource")))
            if value_type is None:
                return None
            if s.get("maxProperties") is not None:
                max_props = _zero_if_negative(int(s["maxProperties"]))
            else:  # "": plus colon, comma and quotes around the key: 6 bytes besides the value
                max_props = (MAX_REQUEST_SIZE_BYTES - 2) // (value_type.min_serialized_size + 6)
            return DeclType("map", 2, max_elements=max_props, elem=value_type, key=STRING)
        required = set(s.get("required") or [])
        fields: dict[str, DeclType] = {}
        min_size = 2  # {}
        for name, prop in (s.get("properties") or {}).items():
            prop_type = schema_decl_type(prop, bool(prop.get("x-kubernetes-embedded-resource")))
            if prop_type is None:
                continue
            escaped = escape(name)
            if escaped is not None:
                fields[escaped] = prop_type
            # required properties without a default are always serialized: "name": value,
            if name in required and prop.get("default") is None:
                min_size += len(name.encode()) + prop_type.min_serialized_size + 4
        return DeclType("object", min_size, fields=fields)
    if kind == "string":
        fmt = s.get("format")
        if fmt == "byte":
            max_len = s.get("maxLength")
            return DeclType(
                "bytes",
                MIN_STRING_SIZE,
                max_elements=_zero_if_negative(int(max_len))
                if max_len is not None
                else _max_string_length_per_request(s),
            )
        if fmt == "duration":
            return DeclType(
                "duration", MIN_DURATION_SIZE_JSON, max_elements=_max_string_length_per_request(s)
            )
        if fmt == "date":
            return DeclType("timestamp", JSON_DATE_SIZE, max_elements=_max_string_length_per_request(s))
        if fmt == "date-time":
            return DeclType(
                "timestamp", MIN_DATETIME_SIZE_JSON, max_elements=_max_string_length_per_request(s)
            )
        if s.get("maxLength") is not None:
            # maxLength counts code points; the estimator reasons in bytes (up to 4 per code point)
            max_elements = _zero_if_negative(int(s["maxLength"])) * 4
        elif s.get("enum"):
            max_elements = _max_enum_length(s)
        else:
            max_elements = _max_string_length_per_request(s)
        return DeclType("string", MIN_STRING_SIZE, max_elements=max_elements)
    if kind == "boolean":
        return BOOL
    if kind == "number":
        return DOUBLE
    if kind == "integer":
        return INT
    return None
