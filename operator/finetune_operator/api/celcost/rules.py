"""One `x-kubernetes-validations` entry as apiextensions validation sees it: field checks, compilation, cost.

The field checks and error texts follow `validateCustomResourceDefinitionOpenAPISchema` (validation.go):
they are schema errors, reported before every CEL error, and when a node or anything below it has one
the server skips compiling that node's rules. Compilation follows `compileRule` (compilation.go).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .celast import CelSyntaxError, parse
from .checker import CelCheckError, Checker
from .coster import estimate_max_cost
from .decltypes import DeclType

SUPPORTED_REASONS = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired")
_NEWLINES = re.compile(r"[\n\r]+")


def go_quote(s: str) -> str:
    """Close to Go's %q for the strings in rules (JSON escaping, printable unicode kept)."""
    return json.dumps(s, ensure_ascii=False)


def go_rule_value(rule: Mapping[str, Any]) -> str:
    """`%#v` of an apiextensions.ValidationRule, the value the server prints for a rule that does not compile."""
    reason = (
        "(*apiextensions.FieldValueErrorReason)(nil)"
        if rule.get("reason") is None
        else go_quote(rule["reason"])
    )
    optional = (
        "(*bool)(nil)" if rule.get("optionalOldSelf") is None else str(bool(rule["optionalOldSelf"])).lower()
    )
    return (
        f"apiextensions.ValidationRule{{Rule:{go_quote(str(rule.get('rule', '')))}, "
        f"Message:{go_quote(str(rule.get('message', '')))}, "
        f"MessageExpression:{go_quote(str(rule.get('messageExpression', '')))}, Reason:{reason}, "
        f"FieldPath:{go_quote(str(rule.get('fieldPath', '')))}, OptionalOldSelf:{optional}}}"
    )


def rule_field_errors(rule: Mapping[str, Any], rule_path: str, schema: Mapping[str, Any]) -> list[str]:
    """The server's checks of one rule's fields (schema errors, not CEL errors)."""
    errors: list[str] = []
    text = str(rule.get("rule", ""))
    message = str(rule.get("message", ""))
    if not text.strip():
        errors.append(f"{rule_path}.rule: Required value: rule is not specified")
    elif message and not message.strip():
        errors.append(
            f"{rule_path}.message: Invalid value: {go_quote(message)}: message must be non-empty if specified"
        )
    elif _NEWLINES.search(message.strip()):
        errors.append(
            f"{rule_path}.message: Invalid value: {go_quote(message)}: message must not contain line breaks"
        )
    elif _NEWLINES.search(text.strip()) and not message.strip():
        errors.append(
            f"{rule_path}.message: Required value: message must be specified if rule contains line breaks"
        )
    expr = str(rule.get("messageExpression", ""))
    if expr and not expr.strip():
        errors.append(
            f"{rule_path}.messageExpression: Required value: messageExpression must be non-empty if specified"
        )
    reason = rule.get("reason")
    if reason is not None and reason not in SUPPORTED_REASONS:
        supported = ", ".join(go_quote(r) for r in SUPPORTED_REASONS)
        errors.append(
            f"{rule_path}.reason: Unsupported value: {go_quote(str(reason))}: supported values: {supported}"
        )
    field_path = rule.get("fieldPath")
    if field_path is not None and str(field_path) and not str(field_path).strip():
        errors.append(
            f"{rule_path}.fieldPath: Invalid value: {go_quote(str(field_path))}: fieldPath must be non-empty if specified"
        )
    if field_path is not None and _NEWLINES.search(str(field_path)):
        errors.append(
            f"{rule_path}.fieldPath: Invalid value: {go_quote(str(field_path))}: fieldPath must not contain line breaks"
        )
    if field_path and not valid_field_path(str(field_path), schema):
        errors.append(
            f"{rule_path}.fieldPath: Invalid value: {go_quote(str(field_path))}: fieldPath must be a valid path"
        )
    return errors


def _path_tokens(path: str) -> list[str]:
    """ValidFieldPath's scanner: '.', '[' and ']' alone, single-quoted strings whole, names between."""
    tokens: list[str] = []
    i = 0
    while i < len(path):
        if path[i] == "'":
            j = i + 1
            while j < len(path) and not (path[j] == "'" and path[j - 1] != "\\"):
                j += 1
            tokens.append(path[i : j + 1])
            i = j + 1
        elif path[i] in ".[]":
            tokens.append(path[i])
            i += 1
        else:
            j = i
            while j < len(path) and path[j] not in ".[]":
                j += 1
            tokens.append(path[i:j])
            i = j
    return tokens


def valid_field_path(path: str, schema: Mapping[str, Any]) -> bool:
    """cel.ValidFieldPath: `.name` and `['key']` steps that exist in the schema (no list indexes)."""
    tokens = iter(_path_tokens(path))
    node: Mapping[str, Any] | None = schema
    for tok in tokens:
        if tok == "[":
            quoted = next(tokens, "")
            if len(quoted) < 2 or quoted[0] != "'" or quoted[-1] != "'" or next(tokens, "") != "]":
                return False
            name = re.sub(r"\\(.)", r"\1", quoted[1:-1])
        elif tok == ".":
            name = next(tokens, "")
        else:
            return False
        if node is None:
            return False
        props, extra = node.get("properties"), node.get("additionalProperties")
        if props:
            node = props.get(name)
            if node is None:
                return False
        elif extra is not None:
            node = extra if isinstance(extra, Mapping) else None
        else:
            return False
    return True


class CompileError(ValueError):
    """The text after `Invalid value: <rule>: ` in the server's answer."""


@dataclass(frozen=True)
class Compiled:
    cost: int
    uses_old_self: bool


def compile_expression(text: str, decl: DeclType, message: bool = False) -> Compiled:
    """Parse, type-check and cost one rule (or messageExpression) against the node's DeclType."""
    prefix = "messageExpression compilation failed: " if message else "compilation failed: "
    try:
        expr = parse(text)
        checker = Checker(decl)
        out = checker.check(expr)
    except (CelSyntaxError, CelCheckError) as exc:
        raise CompileError(f"{prefix}ERROR: <input>: {exc}") from exc
    if message and out.kind not in ("string", "dyn"):
        raise CompileError("messageExpression must evaluate to a string")
    if not message and out.kind not in ("bool", "dyn"):
        raise CompileError("cel expression must evaluate to a bool")
    return Compiled(estimate_max_cost(checker, decl, expr), checker.uses_old_self)
