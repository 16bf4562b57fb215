"""Validate an object against a generated CRD the way kube-apiserver does, offline.

A thin wrapper over `finetune_operator.local.crdvalidation` (the emulator uses the same module), with
`kubectl`'s default `fieldValidation=Strict`: unknown fields are errors.
"""

from __future__ import annotations

from typing import Any

from finetune_operator.local.crdvalidation import ValidationResult
from finetune_operator.local.crdvalidation import validate as server_validate


def check(
    obj: dict[str, Any],
    crd: dict[str, Any],
    old: dict[str, Any] | None = None,
    field_validation: str = "Strict",
    subresource: str | None = None,
) -> ValidationResult:
    """The full result (errors, warnings, the pruned and defaulted object)."""
    return server_validate(crd, obj, old=old, field_validation=field_validation, subresource=subresource)


def validate(
    obj: dict[str, Any],
    crd: dict[str, Any],
    old: dict[str, Any] | None = None,
    field_validation: str = "Strict",
) -> list[str]:
    """Errors as 'path: message' strings; empty when the object is accepted."""
    return check(obj, crd, old, field_validation).errors
