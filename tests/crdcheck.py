"""Validate an object against a generated CRD the way kube-apiserver does, offline.

Structural schema (types, enums, patterns, bounds, required) with strict field validation (unknown
fields are errors, as `kubectl apply` does by default), then every `x-kubernetes-validations` CEL rule,
evaluated with cel-python. Transition rules (those using oldSelf) run only when `old` is given.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(n) for n in node]
    return node


def _rules(
    schema: dict[str, Any], value: Any, path: str, old: Any, out: list[tuple[str, str, Any, Any]]
) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        out.append((path or "<root>", rule["rule"] + "\x00" + rule.get("message", ""), value, old))
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _rules(
                    sub,
                    value[key],
                    f"{path}.{key}" if path else key,
                    old.get(key) if isinstance(old, dict) else None,
                    out,
                )
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _rules(schema["items"], item, f"{path}[{i}]", None, out)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting, as the API server does before validation."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def validate(obj: dict[str, Any], crd: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Errors as 'path: message' strings; empty when the object is accepted."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = apply_defaults(schema, copy.deepcopy(obj))
    if old is not None:
        old = apply_defaults(schema, copy.deepcopy(old))
    errors: list[str] = []
    validator = jsonschema.Draft4Validator(_strict(copy.deepcopy(schema)))
    for err in validator.iter_errors(obj):
        path = ".".join(str(p) for p in err.absolute_path)
        errors.append(f"{path}: {err.message}")
    if errors:
        return errors
    env = celpy.Environment()
    checks: list[tuple[str, str, Any, Any]] = []
    _rules(schema, obj, "", old, checks)
    for path, packed, value, old_value in checks:
        rule, message = packed.split("\x00", 1)
        if "oldSelf" in rule and old_value is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if old_value is not None:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        result = env.program(env.compile(rule)).evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path}: {message}")
    return errors
