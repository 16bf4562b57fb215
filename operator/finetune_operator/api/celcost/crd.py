"""Walk a CRD's schemas the way apiextensions validation does and check every rule's estimated cost.

Follows `validateCustomResourceDefinitionOpenAPISchema` and `cel_validation.go`: children are visited
before a node's own rules; each node's cardinality is the product of the maxItems / maxProperties of the
lists and maps above it (unbounded as soon as one of them has no bound, in which case the rule's own
worst case `3 MiB / (min serialized size + 1)` is used); a rule's cost is its CEL cost times that
cardinality; the per-schema total and the four most expensive rules (of at least 1% of the total's
limit) make the whole-schema errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .decltypes import max_cardinality, schema_decl_type
from .estimates import MAX_U64
from .rules import Compiled, CompileError, compile_expression, go_quote, go_rule_value, rule_field_errors

STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
_HINT = (
    "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, "
    "and strings are declared)"
)
_CONTRIBUTED = "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"


@dataclass(frozen=True)
class RuleCost:
    """One rule (or messageExpression) and its estimated cost against the per-expression limit."""

    path: str
    rule: str
    cost: int
    limit: int
    per_evaluation: int = 0  # the CEL cost of one evaluation
    evaluations: int = 1  # how many times it can run in one object (the cardinality multiplier)

    @property
    def over(self) -> bool:
        return self.cost > self.limit


@dataclass(frozen=True)
class SchemaCost:
    """The estimated total of every rule in one OpenAPI v3 schema, against the per-CRD limit."""

    path: str
    total: int
    limit: int = STATIC_ESTIMATED_CRD_COST_LIMIT


@dataclass
class CrdCostReport:
    """Every rule's estimate, each schema's total, and the server's errors (empty: it would accept the CRD)."""

    rules: list[RuleCost] = field(default_factory=list)
    schemas: list[SchemaCost] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def cost_factor(cost: int, limit: int) -> str:
    """`getCostErrorMessage`'s factor: more than 100x, %f below 1.5x, %.1f otherwise."""
    factor = float(cost) / float(limit)
    if factor > 100.0:
        return "more than 100x"
    if factor < 1.5:
        return f"{factor:f}x"
    return f"{factor:.1f}x"


def cost_error_message(name: str, cost: int, limit: int) -> str:
    return f"{name} exceeds budget by factor of {cost_factor(cost, limit)} {_HINT}"


def _mul_guard(base: int, cardinality: int) -> int:
    if base == 0:
        return 0
    return MAX_U64 if MAX_U64 // base < cardinality else base * cardinality


def _max_elements(s: Mapping[str, Any]) -> int | None:
    """extractMaxElements: the factor by which a schema multiplies its children (None: unbounded)."""
    kind = s.get("type")
    if kind == "object":
        if s.get("additionalProperties") is not None:
            return max(int(s["maxProperties"]), 0) if s.get("maxProperties") is not None else None
        return 1
    if kind == "array":
        return max(int(s["maxItems"]), 0) if s.get("maxItems") is not None else None
    return 1


@dataclass
class _Walk:
    """One schema's traversal: rule costs, the running total, schema errors and CEL errors (kept apart)."""

    report: CrdCostReport
    suppress_per_expression: bool
    total: int = 0
    most_expensive: list[tuple[str, int]] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    cel_errors: list[str] = field(default_factory=list)

    def observe(self, path: str, cost: int) -> None:
        self.total = min(self.total + cost, MAX_U64)
        if cost < STATIC_ESTIMATED_CRD_COST_LIMIT // 100:  # < 1% of the total's limit
            return
        self.most_expensive.append((path, cost))
        self.most_expensive.sort(key=lambda pc: pc[1], reverse=True)
        del self.most_expensive[4:]

    def visit(
        self, s: Mapping[str, Any], path: str, cardinality: int | None, is_root: bool, no_old_self: str | None
    ) -> bool:
        """Children first, then this node's rules; True when this subtree has schema errors."""
        child_card: int | None = None
        if cardinality is not None:
            m = _max_elements(s)
            child_card = None if m is None else _mul_guard(cardinality, m)
        before = len(self.schema_errors)
        extra = s.get("additionalProperties")
        if isinstance(extra, Mapping):
            self.visit(extra, f"{path}.additionalProperties", child_card, False, no_old_self)
        map_type = s.get("x-kubernetes-map-type")
        for name, prop in (s.get("properties") or {}).items():
            if isinstance(prop, Mapping):
                # maps and structs are correlatable unless a future map type says otherwise
                uncorrelatable = map_type not in (None, "granular", "atomic")
                self.visit(
                    prop,
                    f"{path}.properties[{name}]",
                    child_card,
                    False,
                    no_old_self or (path if uncorrelatable else None),
                )
        items = s.get("items")
        if isinstance(items, Mapping):
            # only list-type=map items can be correlated between old and new objects
            correlatable = s.get("x-kubernetes-list-type") == "map"
            self.visit(
                items, f"{path}.items", child_card, False, no_old_self or (None if correlatable else path)
            )
        rules = s.get("x-kubernetes-validations") or []
        for i, rule in enumerate(rules):
            self.schema_errors += rule_field_errors(rule, f"{path}.x-kubernetes-validations[{i}]", s)
        if rules and len(self.schema_errors) == before:
            self.rules(
                s,
                path,
                cardinality,
                is_root or bool(s.get("x-kubernetes-embedded-resource")),
                rules,
                no_old_self,
            )
        return len(self.schema_errors) > before

    def rules(
        self,
        s: Mapping[str, Any],
        path: str,
        cardinality: int | None,
        is_root: bool,
        rules: list[Mapping[str, Any]],
        no_old_self: str | None,
    ) -> None:
        decl = schema_decl_type(s, is_root)
        if decl is None:
            self.cel_errors.append(
                f"{path}.x-kubernetes-validations: Internal error: internal error: failed to retrieve type "
                "information for x-kubernetes-validations"
            )
            return
        for i, rule in enumerate(rules):
            rule_path = f"{path}.x-kubernetes-validations[{i}]"
            text = str(rule.get("rule", "")).strip()
            try:
                compiled: Compiled | None = compile_expression(text, decl)
            except CompileError as exc:
                compiled = None
                self.observe(f"{rule_path}.rule", 0)
                self.cel_errors.append(f"{rule_path}.rule: Invalid value: {go_rule_value(rule)}: {exc}")
            if compiled is not None:
                card = cardinality if cardinality is not None else max_cardinality(decl.min_serialized_size)
                self._expression(f"{rule_path}.rule", text, compiled.cost, card)
                message_expr = str(rule.get("messageExpression", "")).strip()
                if message_expr:
                    try:
                        # the server does not multiply messageExpression costs by the cardinality
                        cost = compile_expression(message_expr, decl, message=True).cost
                        self._expression(
                            f"{rule_path}.messageExpression", message_expr, cost, 1, "messageExpression"
                        )
                    except CompileError as exc:
                        self.cel_errors.append(
                            f"{rule_path}.messageExpression: Invalid value: {go_rule_value(rule)}: {exc}"
                        )
            if compiled is not None and compiled.uses_old_self:
                if no_old_self is not None:
                    self.cel_errors.append(
                        f"{rule_path}.rule: Invalid value: {go_quote(str(rule.get('rule', '')))}: oldSelf cannot be "
                        f"used on the uncorrelatable portion of the schema within {no_old_self}"
                    )
            elif rule.get("optionalOldSelf") is not None:
                self.cel_errors.append(
                    f"{rule_path}.optionalOldSelf: Invalid value: {str(bool(rule['optionalOldSelf'])).lower()}: "
                    "may not be set if oldSelf is not used in rule"
                )

    def _expression(
        self, path: str, text: str, per_evaluation: int, evaluations: int, what: str = "rule"
    ) -> None:
        cost = _mul_guard(per_evaluation, evaluations)
        self.report.rules.append(
            RuleCost(path, text, cost, STATIC_ESTIMATED_COST_LIMIT, per_evaluation, evaluations)
        )
        if not self.suppress_per_expression and cost > STATIC_ESTIMATED_COST_LIMIT:
            msg = cost_error_message(f"estimated {what} cost", cost, STATIC_ESTIMATED_COST_LIMIT)
            self.cel_errors.append(f"{path}: Forbidden: {msg}")
        self.observe(path, cost)


def estimate_expression(rule: str, schema: Mapping[str, Any], is_root: bool = False) -> int:
    """The CEL cost of one rule on one schema node, before the cardinality multiplier."""
    decl = schema_decl_type(schema, is_root)
    if decl is None:
        raise CompileError("the schema is not exposed to CEL")
    return compile_expression(rule, decl).cost


def _schemas(crd: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(schema path, version name, openAPIV3Schema) as the server names them after conversion.

    The internal API hoists per-version schemas that are all identical into spec.validation (a CRD
    with one version always lands there), so the server prints `spec.validation.openAPIV3Schema`;
    differing per-version schemas are validated at `spec.versions[i].schema.openAPIV3Schema`.
    """
    spec = crd.get("spec") or {}
    top = (spec.get("validation") or {}).get("openAPIV3Schema")
    if isinstance(top, Mapping):
        return [("spec.validation.openAPIV3Schema", "", top)]
    versions = spec.get("versions") or []
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema"), v.get("name", "")) for v in versions]
    if (
        schemas
        and all(isinstance(s, Mapping) for s, _ in schemas)
        and all(s == schemas[0][0] for s, _ in schemas)
    ):
        return [("spec.validation.openAPIV3Schema", "", schemas[0][0])]  # type: ignore[list-item]
    return [
        (f"spec.versions[{i}].schema.openAPIV3Schema", name, s)
        for i, (s, name) in enumerate(schemas)
        if isinstance(s, Mapping)
    ]


def estimate_crd(crd: Mapping[str, Any], old_crd: Mapping[str, Any] | None = None) -> CrdCostReport:
    """Every rule's estimated cost, and the errors a kube-apiserver would answer to this CRD.

    With `old_crd` (an update), per-expression errors are suppressed for schemas that did not change,
    as the server does (suppressExpressionCostForUnchangedSchema); the per-schema total still applies.
    """
    report = CrdCostReport()
    old = {name or path: s for path, name, s in _schemas(old_crd)} if old_crd is not None else {}
    for path, name, schema in _schemas(crd):
        walk = _Walk(report, suppress_per_expression=old.get(name or path) == schema)
        walk.visit(schema, path, 1, True, None)
        report.errors += walk.schema_errors + walk.cel_errors
        report.schemas.append(SchemaCost(path, walk.total))
        if walk.total > STATIC_ESTIMATED_CRD_COST_LIMIT:
            report.errors.extend(f"{p}: Forbidden: {_CONTRIBUTED}" for p, _ in walk.most_expensive)
            msg = cost_error_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                walk.total,
                STATIC_ESTIMATED_CRD_COST_LIMIT,
            )
            report.errors.append(f"{path}: Forbidden: {msg}")
    return report


def format_report(name: str, report: CrdCostReport) -> list[str]:
    """Human lines for `finetune crds`: each schema's total, then each rule's cost against its limit."""
    lines: list[str] = []
    for schema in report.schemas:
        share = 100.0 * schema.total / schema.limit
        lines.append(
            f"{name}: CEL cost {schema.total:,} of {schema.limit:,} for the whole schema ({share:.2f}%)"
        )
    width = max((len(f"{r.cost:,}") for r in report.rules), default=1)
    times = [f"{r.per_evaluation:,} x {r.evaluations:,}" if r.evaluations != 1 else "" for r in report.rules]
    times_width = max((len(t) for t in times), default=0)
    for r, t in zip(report.rules, times, strict=True):
        mark = "  OVER BUDGET" if r.over else ""
        lines.append(f"  {r.cost:>{width},} / {r.limit:,}  {t:<{times_width}}  {r.path}{mark}")
    return lines


def check_crd(crd: Mapping[str, Any], old_crd: Mapping[str, Any] | None = None) -> list[str]:
    """Just the errors of `estimate_crd` (empty when the server would accept the CRD's rules)."""
    return estimate_crd(crd, old_crd).errors
