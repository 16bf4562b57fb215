"""Kubernetes' static CEL cost check for CRD `x-kubernetes-validations`, without an API server.

`estimate_crd(crd)` reports every rule's estimated cost and the exact errors a kube-apiserver would
answer (KEP-2876; apiextensions validation, cel-go's cost estimator). `finetune crds` and the emulator's
CRD create/update both go through it. See docs/crd-validation.md.
"""

from __future__ import annotations

from .celast import CelSyntaxError
from .checker import CelCheckError
from .crd import (
    STATIC_ESTIMATED_COST_LIMIT,
    STATIC_ESTIMATED_CRD_COST_LIMIT,
    CrdCostReport,
    RuleCost,
    SchemaCost,
    check_crd,
    cost_error_message,
    estimate_crd,
    estimate_expression,
    format_report,
)
from .decltypes import MAX_REQUEST_SIZE_BYTES, max_cardinality, schema_decl_type
from .rules import CompileError

__all__ = [
    "MAX_REQUEST_SIZE_BYTES",
    "STATIC_ESTIMATED_COST_LIMIT",
    "STATIC_ESTIMATED_CRD_COST_LIMIT",
    "CelCheckError",
    "CelSyntaxError",
    "CompileError",
    "CrdCostReport",
    "RuleCost",
    "SchemaCost",
    "check_crd",
    "cost_error_message",
    "estimate_crd",
    "estimate_expression",
    "format_report",
    "max_cardinality",
    "schema_decl_type",
]
