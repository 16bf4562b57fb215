"""Generate the CustomResourceDefinitions from the pydantic models (like controller-gen does for Go types).

The output is deterministic YAML; `finetune crds` writes it to crds/ and the Helm chart, and a test fails
when the committed files drift from the models.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from .celcost import CrdCostReport, estimate_crd
from .common import GROUP, VERSION
from .finetunejob import MUTABLE_AFTER_START, FinetuneJob, FinetuneJobSpec
from .trainingquota import TrainingQuota

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "nullable",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        merged = {**target, **node}  # the field's description wins over the class docstring
        return _resolve(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _resolve({**inner, **node}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _resolve({**options[0], **rest}, defs)
        raise ValueError(f"unions are not structural: {node}")
    return {k: _resolve(v, defs) for k, v in node.items()}


def _structural(node: Any) -> Any:
    """Reduce a resolved JSON schema to a Kubernetes structural schema (OpenAPI v3.0 subset)."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    if "exclusiveMinimum" in node:
        out["minimum"] = node["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node:
        out["maximum"] = node["exclusiveMaximum"]
        out["exclusiveMaximum"] = True
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _structural(value)
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    # Every string is bounded (the CEL cost estimator assumes 3 MiB otherwise): an enum by its longest
    # value, an RFC 3339 timestamp by 64 characters.
    if out.get("type") == "string" and "maxLength" not in out:
        if "enum" in out:
            out["maxLength"] = max(len(str(v)) for v in out["enum"])
        elif out.get("format") == "date-time":
            out["maxLength"] = 64
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(_resolve(raw, defs))
    return schema


def _conditions_as_map(schema: dict[str, Any]) -> None:
    conds = schema.get("properties", {}).get("conditions")
    if conds:
        conds["x-kubernetes-list-type"] = "map"
        conds["x-kubernetes-list-map-keys"] = ["type"]


def _immutability_rule() -> dict[str, str]:
    fields = [
        f.alias or name
        for name, f in FinetuneJobSpec.model_fields.items()
        if (f.alias or name) not in MUTABLE_AFTER_START
    ]
    parts = [
        f"(has(self.spec.{f}) == has(oldSelf.spec.{f}) && (!has(self.spec.{f}) || "
        f"self.spec.{f} == oldSelf.spec.{f}))"
        for f in fields
    ]
    return {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.startTime) || (" + " && ".join(parts) + ")",
        "message": "spec is immutable once the job has started, except spec.runPolicy "
        "(suspend, deadlines, TTL); create a new FinetuneJob instead",
    }


def _object_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model)
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string", "description": props["apiVersion"]["description"]}
    props["kind"] = {"type": "string", "description": props["kind"]["description"]}
    if "status" in props:
        _conditions_as_map(props["status"])
    schema.pop("required", None)
    schema["required"] = ["spec"] if "spec" in (model.model_json_schema().get("required") or []) else []
    if not schema["required"]:
        schema.pop("required")
    return schema


def _crd(
    kind: str,
    plural: str,
    singular: str,
    short: list[str],
    scope: str,
    categories: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "finetune-operator"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short,
                "categories": categories,
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def finetunejob_crd() -> dict[str, Any]:
    schema = _object_schema(FinetuneJob)
    schema["x-kubernetes-validations"] = [_immutability_rule()]
    columns: list[dict[str, Any]] = [
        {"name": "Engine", "type": "string", "jsonPath": ".status.engine"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
        {"name": "Model", "type": "string", "jsonPath": ".status.model.name"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "MRR@10", "type": "string", "jsonPath": ".status.metrics.mrrAt10Change", "priority": 1},
    ]
    return _crd(
        "FinetuneJob",
        "finetunejobs",
        "finetunejob",
        ["ftj"],
        "Namespaced",
        ["finetune", "all"],
        schema,
        columns,
    )


def trainingquota_crd() -> dict[str, Any]:
    schema = _object_schema(TrainingQuota)
    columns: list[dict[str, Any]] = [
        {"name": "Usage", "type": "string", "jsonPath": ".status.usageSummary"},
        {"name": "Admitted", "type": "integer", "jsonPath": ".status.admittedJobs"},
        {"name": "Queued", "type": "integer", "jsonPath": ".status.queuedJobs"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        "TrainingQuota", "trainingquotas", "trainingquota", ["tq"], "Cluster", ["finetune"], schema, columns
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD manifest."""
    return {
        "finetune.dev_finetunejobs.yaml": finetunejob_crd(),
        "finetune.dev_trainingquotas.yaml": trainingquota_crd(),
    }


def cost_reports(crds: dict[str, dict[str, Any]] | None = None) -> dict[str, CrdCostReport]:
    """File name -> every CEL rule's estimated cost, and what a kube-apiserver would refuse (celcost)."""
    return {name: estimate_crd(crd) for name, crd in (crds if crds is not None else all_crds()).items()}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated from the pydantic models by `finetune crds`. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
