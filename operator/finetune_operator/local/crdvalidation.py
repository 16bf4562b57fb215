"""Validate a custom resource against its CRD the way kube-apiserver does, offline and pure (no kopf).

The order follows the apiextensions-apiserver request path:

1. decoding: structural pruning of unknown fields, reported per the request's ``fieldValidation``
   (``Strict``: 400 ``strict decoding error: unknown field "spec.foo"``; ``Warn``, the default: pruned
   and one ``unknown field "spec.foo"`` warning each; ``Ignore``: pruned silently). Nulls of
   non-nullable fields without a default are dropped, then structural defaults are applied
   (``PruneNonNullableNullsWithoutDefaults`` and ``structuraldefaulting.Default``);
2. the status subresource: a create drops ``status``, a main-resource update keeps the old status, a
   ``status`` update keeps everything but status from the old object (the strategies' PrepareFor*);
3. OpenAPI schema validation (type, enum, bounds, pattern, required, date-time format, list-type
   map/set uniqueness), errors rendered as the server's field errors
   (``spec.x: Invalid value: -1: spec.x in body should be greater than or equal to 1``);
4. ``x-kubernetes-validations`` CEL rules (cel-python), only when no *blocking* schema error exists
   (NotSupported, Required, TooLong, TooMany, TypeInvalid, as ``hasBlockingErr`` in the CR strategy).
   Transition rules (``oldSelf``) run only on update where the old value correlates (object
   properties, map keys, ``x-kubernetes-list-type: map`` items by key);
5. on update, validation ratcheting (KEP-4008, GA in v1.33, on by default since v1.30): errors on
   values unchanged from the old object are dropped, and non-transition rules on unchanged values skip.

Errors are 422 field errors; a strict-decoding failure is a 400 and stops before validation.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy.adapter import json_to_cel

from .schemacheck import BLOCKING, OMIT, FieldError, check, child, display, list_keys

FIELD_VALIDATION_MODES = ("Strict", "Warn", "Ignore")
_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_CEL_REASONS = {
    "FieldValueInvalid": "Invalid",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required",
    "FieldValueDuplicate": "Duplicate",
}


@dataclass
class ValidationResult:
    """What the server would answer. ``obj`` is the pruned, defaulted object it would store."""

    errors: list[str]
    warnings: list[str]
    obj: dict[str, Any]
    field_errors: list[FieldError] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    code: int = 200  # 400 strict decoding error, 422 invalid

    @property
    def ok(self) -> bool:
        return not self.errors

    def status(self, kind: str, group: str, name: str) -> dict[str, Any]:
        """The metav1.Status the server returns for a refused request."""
        if self.code == 400:
            version = str(self.obj.get("apiVersion", "")).rpartition("/")[2]
            message = (
                f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: '
                + ", ".join(self.errors)
            )
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": "BadRequest",
                "code": 400,
            }
        joined = self.errors[0] if len(self.errors) == 1 else "[" + ", ".join(self.errors) + "]"
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f'{kind}.{group} "{name}" is invalid: {joined}',
            "reason": "Invalid",
            "details": {
                "name": name,
                "group": group,
                "kind": kind,
                "causes": [e.cause for e in self.field_errors],
            },
            "code": 422,
        }


# ---------------------------------------------------------------------------- decoding


def _prune(value: Any, schema: Mapping[str, Any], path: str, pruned: list[str], root: bool = False) -> Any:
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        out: dict[str, Any] = {}
        for key, sub in value.items():
            if root and key in _ROOT_KEEP and key not in props:
                out[key] = sub
            elif key in props:
                out[key] = (
                    sub if root and key == "metadata" else _prune(sub, props[key], child(path, key), pruned)
                )
            elif isinstance(additional, Mapping):
                out[key] = _prune(sub, additional, child(path, key), pruned)
            elif preserve:
                out[key] = sub
            else:
                pruned.append(child(path, key))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_prune(v, schema["items"], f"{path}[{i}]", pruned) for i, v in enumerate(value)]
    return value


def _default(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value and value[key] is None and not sub.get("nullable"):
                if "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                else:
                    del value[key]
            elif key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key in list(value):
                if key not in schema.get("properties", {}):
                    value[key] = _default(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_default(v, schema["items"]) for v in value]
    return value


# ---------------------------------------------------------------------------- CEL


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(expr: str) -> Any:
    prog = _PROGRAMS.get(expr)
    if prog is None:
        prog = _PROGRAMS[expr] = _ENV.program(_ENV.compile(expr))
    return prog


_VERDICTS: dict[tuple[str, str, str | None], bool | str] = {}  # (rule, self, oldSelf) -> result or error
_VERDICTS_MAX = 4096


def _verdict(expr: str, value: Any, old: Any, with_old: bool) -> bool | str:
    """The rule's result on these values (True/False), or its runtime error's text. CEL rules are pure, so
    results are memoized by the JSON of self (and oldSelf): an emulator re-validates the same spec on every
    status write."""
    key = (
        expr,
        json.dumps(value, sort_keys=True, default=str),
        json.dumps(old, sort_keys=True, default=str) if with_old else None,
    )
    verdict = _VERDICTS.get(key)
    if verdict is None:
        activation: dict[str, Any] = {"self": json_to_cel(value)}
        if with_old:
            activation["oldSelf"] = json_to_cel(old)
        try:
            verdict = _truthy(_program(expr).evaluate(activation))
        except Exception as exc:
            verdict = str(exc)
        if len(_VERDICTS) >= _VERDICTS_MAX:
            _VERDICTS.clear()
        _VERDICTS[key] = verdict
    return verdict


def _truthy(result: Any) -> bool:
    return result is True or (isinstance(result, celpy.celtypes.BoolType) and bool(result))


_MISSING = object()


def _correlate_items(schema: Mapping[str, Any], item: Any, old_list: Any) -> Any:
    if not isinstance(old_list, list):
        return _MISSING
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        want = list_keys(item, keys)
        for old_item in old_list:
            if list_keys(old_item, keys) == want:
                return old_item
    if schema.get("x-kubernetes-list-type") == "set" and item in old_list:
        return item
    return _MISSING


def _cel(
    schema: Mapping[str, Any],
    value: Any,
    old: Any,
    path: str,
    node: tuple[Any, ...],
    ratchet: bool,
    errs: list[FieldError],
) -> None:
    if value is None:
        return
    unchanged = ratchet and old is not _MISSING and old == value
    for rule in schema.get("x-kubernetes-validations", []):
        expr = rule["rule"]
        transition = "oldSelf" in expr
        if transition and old is _MISSING and not rule.get("optionalOldSelf"):
            continue
        if unchanged and not transition:
            continue
        with_old = transition and old is not _MISSING
        ok = _verdict(expr, value, old, with_old)
        if isinstance(ok, str):  # a CEL runtime error is an Invalid error, as on the server
            errs.append(
                FieldError("Invalid", display(path), f"{expr}: {ok}", schema.get("type", "object"), node)
            )
            continue
        if ok:
            continue
        message = rule.get("message") or f"failed rule: {expr}"
        if rule.get("messageExpression"):
            activation: dict[str, Any] = {"self": json_to_cel(value)}
            if with_old:
                activation["oldSelf"] = json_to_cel(old)
            with contextlib.suppress(Exception):
                message = str(_program(rule["messageExpression"]).evaluate(activation))
        where = path
        if rule.get("fieldPath"):
            where = path + rule["fieldPath"] if path else rule["fieldPath"].lstrip(".")
        kind = _CEL_REASONS.get(rule.get("reason", "FieldValueInvalid"), "Invalid")
        shown = schema.get("type", "object") if kind in ("Invalid", "Duplicate") else OMIT
        errs.append(FieldError(kind, display(where), message, shown, node))
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, sub in value.items():
            if not path and key == "metadata":
                continue
            sub_schema = props.get(key, additional if isinstance(additional, Mapping) else None)
            if sub_schema is None:
                continue
            sub_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            sub_path = child(path, key) if key in props else f"{path}[{key}]"
            _cel(sub_schema, sub, sub_old, sub_path, (*node, key), ratchet, errs)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            item_old = _correlate_items(schema, item, old)
            _cel(schema["items"], item, item_old, f"{path}[{i}]", (*node, i), ratchet, errs)


# ---------------------------------------------------------------------------- entry point


def _at(obj: Any, node: tuple[Any, ...]) -> Any:
    for part in node:
        if isinstance(part, int):
            if not isinstance(obj, list) or part >= len(obj):
                return _MISSING
        elif not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def crd_schema(crd: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD version (the storage version when none is named)."""
    versions = crd["spec"]["versions"]
    chosen = next(
        (v for v in versions if (v["name"] == version if version else v.get("storage"))), versions[0]
    )
    schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
    return schema


def _has_status_subresource(crd: Mapping[str, Any]) -> bool:
    return any("status" in (v.get("subresources") or {}) for v in crd["spec"]["versions"])


def validate(
    crd: Mapping[str, Any],
    obj: Mapping[str, Any],
    *,
    old: Mapping[str, Any] | None = None,
    field_validation: str = "Warn",
    subresource: str | None = None,
) -> ValidationResult:
    """Decode, default and validate `obj` (a create, or an update of `old`) as kube-apiserver does."""
    if field_validation not in FIELD_VALIDATION_MODES:
        raise ValueError(f"fieldValidation must be one of {', '.join(FIELD_VALIDATION_MODES)}")
    version = str(obj.get("apiVersion", "")).rpartition("/")[2] or None
    schema = crd_schema(crd, version)
    pruned: list[str] = []
    decoded = _prune(copy.deepcopy(dict(obj)), schema, "", pruned, root=True)
    unknown = [f'unknown field "{p}"' for p in pruned]
    if field_validation == "Strict" and unknown:
        return ValidationResult(unknown, [], decoded, [], pruned, 400)
    warnings = unknown if field_validation == "Warn" else []
    decoded = _default(decoded, schema)
    old_obj: dict[str, Any] | None = None
    if old is not None:
        old_obj = _default(copy.deepcopy(dict(old)), schema)
    if _has_status_subresource(crd):
        if subresource == "status" and old_obj is not None:
            new_status = decoded.get("status", _MISSING)
            decoded = copy.deepcopy(old_obj)
            decoded.pop("status", None)
            if new_status is not _MISSING:
                decoded["status"] = new_status
        elif subresource is None and old_obj is None:
            decoded.pop("status", None)
        elif subresource is None and old_obj is not None:
            decoded.pop("status", None)
            if "status" in old_obj:
                decoded["status"] = copy.deepcopy(old_obj["status"])
    errs: list[FieldError] = []
    check(decoded, schema, "", (), errs)
    ratchet = old_obj is not None
    if ratchet:
        errs = [e for e in errs if e.type == "Required" or _at(decoded, e.node) != _at(old_obj, e.node)]
    if any(e.type in BLOCKING for e in errs):
        errs.append(
            FieldError(
                "Invalid",
                "<nil>",
                "some validation rules were not checked because the object was invalid; "
                "correct the existing errors to complete validation",
                "null",
            )
        )
    else:
        _cel(schema, decoded, old_obj if old_obj is not None else _MISSING, "", (), ratchet, errs)
    messages = [str(e) for e in errs]
    return ValidationResult(messages, warnings, decoded, errs, pruned, 422 if errs else 200)
