"""OpenAPI schema validation of custom resources, with kube-apiserver's field errors.

The checks of kube-openapi's validator on a structural schema (type, enum, bounds, pattern, required,
date-time format) and apiextensions' list-type uniqueness, rendered as apimachinery `field.Error`s the
way ValidateCustomResource converts them (Required, Unsupported value, Too long, Too many, Invalid
value). Pure; used by crdvalidation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

BLOCKING = {"NotSupported", "Required", "TooLong", "TooMany", "TypeInvalid"}
_TITLES = {
    "Required": "Required value",
    "NotSupported": "Unsupported value",
    "TooLong": "Too long",
    "TooMany": "Too many",
    "TypeInvalid": "Invalid value",
    "Invalid": "Invalid value",
    "Duplicate": "Duplicate value",
    "Forbidden": "Forbidden",
}
_REASONS = {
    "Required": "FieldValueRequired",
    "NotSupported": "FieldValueNotSupported",
    "TooLong": "FieldValueTooLong",
    "TooMany": "FieldValueTooMany",
    "TypeInvalid": "FieldValueTypeInvalid",
    "Invalid": "FieldValueInvalid",
    "Duplicate": "FieldValueDuplicate",
    "Forbidden": "FieldValueForbidden",
}
OMIT = object()
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _go_value(value: Any) -> str:
    """A bad value as field.Error.ErrorBody prints it (%v for scalars, %q for strings, JSON otherwise)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@dataclass(frozen=True)
class FieldError:
    """One apimachinery field.Error."""

    type: str
    field: str
    detail: str = ""
    value: Any = OMIT
    node: tuple[Any, ...] = ()  # the object node the check ran on (for ratcheting)

    def __str__(self) -> str:
        body = _TITLES[self.type]
        if self.type not in ("Required", "Forbidden", "TooLong") and self.value is not OMIT:
            body += ": " + _go_value(self.value)
        if self.detail:
            body += ": " + self.detail
        return f"{self.field}: {body}"

    @property
    def cause(self) -> dict[str, str]:
        """The metav1.StatusCause of this error."""
        return {"reason": _REASONS[self.type], "message": str(self).split(": ", 1)[1], "field": self.field}


# ---------------------------------------------------------------------------- paths


def child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def display(path: str) -> str:
    return path or "<nil>"


# ---------------------------------------------------------------------------- schema validation


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(typ: str | None, value: Any, schema: Mapping[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    if typ is None:
        return True
    actual = _type_of(value)
    if typ == "number":
        return actual in ("integer", "number")
    if typ == "integer":
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == typ


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def list_keys(item: Any, keys: list[str]) -> Any:
    if not isinstance(item, dict):
        return None
    return {k: item.get(k) for k in keys}


def check(
    value: Any, schema: Mapping[str, Any], path: str, node: tuple[Any, ...], errs: list[FieldError]
) -> None:
    name = display(path)
    if value is None:
        if not schema.get("nullable"):
            typ = schema.get("type", "object")
            errs.append(
                FieldError("TypeInvalid", name, f'{name} in body must be of type {typ}: "null"', "null", node)
            )
        return
    typ = schema.get("type")
    if not _type_ok(typ, value, schema):
        errs.append(
            FieldError(
                "TypeInvalid", name, f'{name} in body must be of type {typ}: "{_type_of(value)}"', value, node
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v if isinstance(v, str) else json.dumps(v)) for v in schema["enum"])
        errs.append(FieldError("NotSupported", name, f"supported values: {allowed}", value, node))
    if isinstance(value, str):
        _check_string(value, schema, name, node, errs)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, name, node, errs)
    elif isinstance(value, list):
        _check_list(value, schema, path, node, errs)
    elif isinstance(value, dict):
        _check_object(value, schema, path, node, errs)


def _check_string(
    value: str, schema: Mapping[str, Any], name: str, node: tuple[Any, ...], errs: list[FieldError]
) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        n = schema["maxLength"]
        errs.append(
            FieldError("TooLong", name, f"may not be more than {n} byte{'s' if n != 1 else ''}", value, node)
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        errs.append(
            FieldError(
                "Invalid",
                name,
                f"{name} in body should be at least {schema['minLength']} chars long",
                value,
                node,
            )
        )
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errs.append(
            FieldError("Invalid", name, f"{name} in body should match '{schema['pattern']}'", value, node)
        )
    if schema.get("format") == "date-time" and not (_RFC3339.match(value) and _parses(value)):
        errs.append(
            FieldError(
                "TypeInvalid", name, f'{name} in body must be of type date-time: "{value}"', value, node
            )
        )


def _parses(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _check_number(
    value: float, schema: Mapping[str, Any], name: str, node: tuple[Any, ...], errs: list[FieldError]
) -> None:
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= low:
            errs.append(
                FieldError("Invalid", name, f"{name} in body should be greater than {_num(low)}", value, node)
            )
        elif value < low:
            errs.append(
                FieldError(
                    "Invalid",
                    name,
                    f"{name} in body should be greater than or equal to {_num(low)}",
                    value,
                    node,
                )
            )
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= high:
            errs.append(
                FieldError("Invalid", name, f"{name} in body should be less than {_num(high)}", value, node)
            )
        elif value > high:
            errs.append(
                FieldError(
                    "Invalid",
                    name,
                    f"{name} in body should be less than or equal to {_num(high)}",
                    value,
                    node,
                )
            )


def _check_list(
    value: list[Any], schema: Mapping[str, Any], path: str, node: tuple[Any, ...], errs: list[FieldError]
) -> None:
    name = display(path)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errs.append(
            FieldError("TooMany", name, f"must have at most {schema['maxItems']} items", len(value), node)
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        errs.append(
            FieldError(
                "Invalid",
                name,
                f"{name} in body should have at least {schema['minItems']} items",
                value,
                node,
            )
        )
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            check(item, items, f"{path}[{i}]", (*node, i), errs)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type in ("map", "set"):
        seen: list[Any] = []
        for i, item in enumerate(value):
            key = (
                list_keys(item, schema.get("x-kubernetes-list-map-keys", [])) if list_type == "map" else item
            )
            if key in seen:
                errs.append(FieldError("Duplicate", f"{path}[{i}]", "", key, node))
            seen.append(key)


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], path: str, node: tuple[Any, ...], errs: list[FieldError]
) -> None:
    name = display(path)
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errs.append(
            FieldError(
                "TooMany", name, f"must have at most {schema['maxProperties']} items", len(value), node
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errs.append(
            FieldError(
                "Invalid",
                name,
                f"{name} in body should have at least {schema['minProperties']} properties",
                value,
                node,
            )
        )
    for key in schema.get("required", []):
        if key not in value:
            errs.append(FieldError("Required", child(path, key), "", OMIT, node))
    props: Mapping[str, Any] = schema.get("properties", {})
    for key, sub in value.items():
        if not path and key == "metadata":
            continue
        if key in props:
            check(sub, props[key], child(path, key), (*node, key), errs)
        elif isinstance(schema.get("additionalProperties"), Mapping):
            # kube-openapi names a map value path.key (the CEL validator, below, says path[key])
            check(sub, schema["additionalProperties"], child(path, key), (*node, key), errs)
