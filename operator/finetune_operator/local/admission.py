"""What the emulated kube-apiserver checks on a write, beyond object metadata (see docs/emulator.md):

* a custom resource (and its ``status`` subresource) is decoded, pruned, defaulted and validated against
  its installed CRD (:func:`finetune_operator.local.crdvalidation.validate`), honouring the request's
  ``fieldValidation`` (``Strict``, ``Warn`` -- the default --, ``Ignore``; KEP-2885): unknown fields are
  pruned, reported as ``Warning`` headers in ``Warn``, a 400 strict decoding error in ``Strict``;
  schema and CEL errors are a 422 ``Invalid`` with one cause per field;
* a CustomResourceDefinition's ``x-kubernetes-validations`` rules go through the static CEL cost check
  (:func:`finetune_operator.api.celcost.check_crd`, KEP-2876), refused with the server's 422 messages.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from finetune_operator.api.celcost import check_crd
from finetune_operator.local.crdvalidation import FIELD_VALIDATION_MODES, validate
from finetune_operator.local.semantics import ApiError, JsonDict, ResourceDef, now_rfc3339

DEFAULT_FIELD_VALIDATION = "Warn"
CRD_GROUP = "apiextensions.k8s.io"
_FIELD_ERROR = re.compile(
    r"^(?P<field>[^:]+): (?P<type>Forbidden|Invalid value|Required value|Unsupported value)"
)
_CAUSE_REASONS = {
    "Forbidden": "FieldValueForbidden",
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
}


def is_crd(rdef: ResourceDef) -> bool:
    return rdef.group == CRD_GROUP and rdef.plural == "customresourcedefinitions"


def field_validation(params: Mapping[str, str]) -> str:
    """The request's ``fieldValidation`` (400 for an unknown directive, as the server answers)."""
    value = params.get("fieldValidation") or DEFAULT_FIELD_VALIDATION
    if value not in FIELD_VALIDATION_MODES:
        supported = ", ".join(f'"{mode}"' for mode in sorted(FIELD_VALIDATION_MODES))
        raise ApiError.bad_request(
            f'fieldValidation: Unsupported value: "{value}": supported values: {supported}'
        )
    return value


def warning_header(text: str) -> str:
    """One RFC 7234 ``Warning`` header value, as kube-apiserver writes it (code 299, agent ``-``)."""
    return "299 - " + json.dumps(text)


def admit_custom_resource(
    crd: Mapping[str, Any],
    rdef: ResourceDef,
    obj: JsonDict,
    *,
    old: JsonDict | None,
    mode: str,
    subresource: str | None,
    warnings: list[str] | None,
) -> JsonDict:
    """The object the server would store, or :class:`ApiError` (400 strict decoding, 422 invalid)."""
    result = validate(crd, obj, old=old, field_validation=mode, subresource=subresource)
    if result.errors:
        meta = obj.get("metadata") or {}
        status = result.status(rdef.kind, rdef.group, str(meta.get("name", "")))
        raise ApiError(
            int(status["code"]), str(status["reason"]), str(status["message"]), status.get("details")
        )
    if warnings is not None:
        warnings.extend(result.warnings)
    admitted: JsonDict = result.obj
    return admitted


@functools.lru_cache(maxsize=64)
def _cost_errors(crd_json: str, old_json: str | None) -> tuple[str, ...]:
    return tuple(check_crd(json.loads(crd_json), json.loads(old_json) if old_json else None))


def admit_crd(rdef: ResourceDef, crd: JsonDict, old: JsonDict | None) -> None:
    """Refuse a CRD whose CEL rules exceed the cost budgets, with the server's messages (422)."""
    errors = _cost_errors(
        json.dumps(crd.get("spec") and {"spec": crd["spec"]}, sort_keys=True),
        json.dumps({"spec": old["spec"]}, sort_keys=True) if old and old.get("spec") else None,
    )
    if not errors:
        return
    name = str((crd.get("metadata") or {}).get("name", ""))
    joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    causes = []
    for text in errors:
        match = _FIELD_ERROR.match(text)
        cause: JsonDict = {"message": text}
        if match:
            cause = {
                "reason": _CAUSE_REASONS[match.group("type")],
                "message": text[len(match.group("field")) + 2 :],
                "field": match.group("field"),
            }
        causes.append(cause)
    raise ApiError(
        422,
        "Invalid",
        f'{rdef.kind}.{rdef.group} "{name}" is invalid: {joined}',
        {"name": name, "group": rdef.group, "kind": rdef.kind, "causes": causes},
    )


def crd_established_status(crd: JsonDict) -> JsonDict:
    """A new CRD's status once the apiextensions controllers have seen it: its names accepted, established
    (``kubectl wait --for=condition=Established`` returns), the served versions stored."""
    spec = crd.get("spec") or {}
    now = now_rfc3339()
    conditions = [
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    return {
        "acceptedNames": dict(spec.get("names") or {}),
        "conditions": [
            {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now}
            for kind, reason, message in conditions
        ],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }
