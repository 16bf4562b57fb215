"""A type checker for CRD validation rules, just deep enough for cost estimation.

cel-go's coster needs, for every expression, its type (its kind decides whether a select costs 1, and
whether an iteration range is a list or a map) and, for every call, the overload ids the checker
resolved (they select the cost formula). Types of `self` / `oldSelf` come from the schema's DeclType.
When an argument is `dyn`, every overload that could match is kept, as cel-go does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .celast import (
    Call,
    Comprehension,
    Expr,
    Ident,
    ListLit,
    Literal,
    MapLit,
    Select,
)
from .decltypes import DeclType


class CelCheckError(ValueError):
    """The rule does not type-check against the schema (the server answers `compilation failed`)."""


@dataclass(frozen=True, eq=False)
class CelType:
    kind: str  # bool int uint double string bytes duration timestamp null list map object dyn type
    params: tuple[CelType, ...] = ()
    decl: DeclType | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelType) and self.kind == other.kind and self.params == other.params

    def __hash__(self) -> int:
        return hash((self.kind, self.params))


def simple(kind: str) -> CelType:
    return CelType(kind)


DYN, BOOL, INT, UINT, DOUBLE = simple("dyn"), simple("bool"), simple("int"), simple("uint"), simple("double")
STRING, BYTES, NULL, TYPE = simple("string"), simple("bytes"), simple("null"), simple("type")
DURATION, TIMESTAMP = simple("duration"), simple("timestamp")


def list_of(elem: CelType) -> CelType:
    return CelType("list", (elem,))


def map_of(key: CelType, val: CelType) -> CelType:
    return CelType("map", (key, val))


def from_decl(d: DeclType) -> CelType:
    if d.kind == "list":
        assert d.elem is not None
        return CelType("list", (from_decl(d.elem),), d)
    if d.kind == "map":
        assert d.elem is not None
        return CelType("map", (STRING, from_decl(d.elem)), d)
    if d.kind == "object":
        return CelType("object", (), d)
    return CelType(d.kind, (), d)


_NUM = {"int": "int64", "uint": "uint64", "double": "double"}
_ORDERED = {
    **_NUM,
    "bool": "bool",
    "string": "string",
    "bytes": "bytes",
    "timestamp": "timestamp",
    "duration": "duration",
}
_CMP = {"_<_": "less", "_<=_": "less_equals", "_>_": "greater", "_>=_": "greater_equals"}
_ARITH = {"_-_": "subtract", "_*_": "multiply", "_/_": "divide", "_%_": "modulo"}
_TYPE_NAMES = {"bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type", "dyn"}
# result types of the remaining string and list functions (overload ids only matter for the cost formulas,
# which key on the function name or on the ids above); anything else is typed dyn with an O(1) overload
_STRING_RESULT = {"lowerAscii", "upperAscii", "trim", "substring", "replace", "charAt", "reverse", "join"}
_INT_RESULT = {"indexOf", "lastIndexOf", "size"}
_BOOL_RESULT = {"contains", "startsWith", "endsWith", "matches", "isSorted"}


def _kind_is(t: CelType, *kinds: str) -> bool:
    return t.kind == "dyn" or t.kind in kinds


def _join(a: CelType, b: CelType) -> CelType:
    if a.kind == "dyn" or a == b:
        return b if a.kind == "dyn" else a
    if b.kind == "dyn":
        return a
    if a.kind == b.kind == "list":
        return list_of(_join(a.params[0], b.params[0]))
    return DYN


def resolve(fn: str, target: CelType | None, args: list[CelType]) -> tuple[list[str], CelType]:
    """Overload ids (cel-go common/overloads names) and result type of one call."""
    if fn in ("_==_", "_!=_"):
        return (["equals"] if fn == "_==_" else ["not_equals"]), BOOL
    if fn in _CMP:
        a, b = args
        ids = [
            f"{_CMP[fn]}_{_ORDERED[x]}" + ("" if x == y else f"_{_ORDERED[y]}")
            for x in _ORDERED
            for y in _ORDERED
            if _kind_is(a, x) and _kind_is(b, y) and (x == y or (x in _NUM and y in _NUM))
        ]
        return ids or [f"{_CMP[fn]}_dyn"], BOOL
    if fn == "_+_":
        a, b = args
        ids, result = [], DYN
        for k, oid in (("int", "add_int64"), ("uint", "add_uint64"), ("double", "add_double"),
                       ("string", "add_string"), ("bytes", "add_bytes"), ("list", "add_list")):  # fmt: skip
            if _kind_is(a, k) and _kind_is(b, k):
                ids.append(oid)
                result = _join(a, b) if k == "list" else simple(k)
        if _kind_is(a, "timestamp") and _kind_is(b, "duration"):
            ids.append("add_timestamp_duration")
        if _kind_is(a, "duration") and _kind_is(b, "timestamp", "duration"):
            ids.append("add_duration_timestamp" if b.kind == "timestamp" else "add_duration_duration")
        if len(ids) != 1:
            result = DYN if a.kind == "dyn" or b.kind == "dyn" else a
        return ids or ["add_dyn"], result
    if fn in _ARITH:
        a = args[0]
        return [f"{_ARITH[fn]}_{_NUM.get(a.kind, a.kind)}"], (a if a.kind != "timestamp" else DURATION)
    if fn == "-_":
        return [f"negate_{_NUM.get(args[0].kind, args[0].kind)}"], args[0]
    if fn == "!_":
        return ["logical_not"], BOOL
    if fn == "_&&_":
        return ["logical_and"], BOOL
    if fn == "_||_":
        return ["logical_or"], BOOL
    if fn == "@not_strictly_false":
        return ["not_strictly_false"], BOOL
    if fn == "_?_:_":
        return ["conditional"], _join(args[1], args[2])
    if fn == "_[_]":
        a = args[0]
        if a.kind == "list":
            return ["index_list"], a.params[0]
        if a.kind == "map":
            return ["index_map"], a.params[1]
        return ["index_list", "index_map"], DYN
    if fn == "@in":
        b = args[1]
        if b.kind == "list":
            return ["in_list"], BOOL
        if b.kind == "map":
            return ["in_map"], BOOL
        return ["in_list", "in_map"], BOOL
    recv = target if target is not None else (args[0] if args else None)
    rk = recv.kind if recv is not None else "dyn"
    member = target is not None
    if fn == "size":
        kinds = ["string", "bytes", "list", "map"] if rk == "dyn" else [rk]
        return [f"{k}_size" if member else f"size_{k}" for k in kinds], INT
    if fn == "contains" and member:
        return ["contains_string"], BOOL
    if fn in ("startsWith", "endsWith") and member:
        return [("starts_with" if fn == "startsWith" else "ends_with") + "_string"], BOOL
    if fn == "matches":
        return (["matches_string"] if member else ["matches"]), BOOL
    if fn == "bytes" and not member:
        return (["string_to_bytes"] if rk in ("string", "dyn") else [f"{rk}_to_bytes"]), BYTES
    if fn == "string" and not member:
        return (["bytes_to_string"] if rk == "bytes" else [f"{rk}_to_string"]), STRING
    if fn in ("int", "uint", "double") and not member:
        return [f"{rk}_to_{_NUM[fn]}"], simple(fn)
    if fn == "dyn" and not member:
        return ["to_dyn"], args[0] if args else DYN
    if fn == "type" and not member:
        return ["type"], TYPE
    if fn == "format" and member:
        return ["string_format"], STRING
    if fn == "cel.@mapInsert":
        return (["cel_@mapInsert_map_key_value"] if len(args) == 3 else ["cel_@mapInsert_map_map"]), args[0]
    if fn == "strings.quote":
        return ["strings_quote"], STRING
    library = _k8s_library(fn, target, args)
    if library is not None:
        return library
    if fn == "split":
        return [f"string_split{'_limit' if len(args) > 1 else ''}"], list_of(STRING)
    if fn in ("find",):
        return ["find"], STRING
    if fn in ("findAll",):
        return ["find_all"], list_of(STRING)
    if fn in ("sum", "min", "max") and recv is not None and recv.kind == "list":
        return [f"list_{fn}"], recv.params[0]
    if fn in _STRING_RESULT:
        return [f"{rk}_{fn}"], STRING
    if fn in _INT_RESULT:
        return [f"{rk}_{fn}"], INT
    if fn in _BOOL_RESULT:
        return [f"{rk}_{fn}"], BOOL
    if fn == "timestamp":
        return ["string_to_timestamp"], TIMESTAMP
    if fn == "duration":
        return ["string_to_duration"], DURATION
    return [f"{fn}_{rk}"], DYN


URL, IP, CIDR, QUANTITY, SEMVER, FORMAT = (
    simple(k) for k in ("url", "ip", "cidr", "quantity", "semver", "format")
)
_LIBRARY_RESULTS: dict[str, CelType] = {
    **dict.fromkeys(("getScheme", "getHost", "getHostname", "getPort", "getEscapedPath"), STRING),
    **dict.fromkeys(
        ("family", "prefixLength", "sign", "asInteger", "compareTo", "major", "minor", "patch"), INT
    ),
    **dict.fromkeys(
        (
            "isUnspecified",
            "isLoopback",
            "isLinkLocalMulticast",
            "isLinkLocalUnicast",
            "isGlobalUnicast",
            "isInteger",
            "isGreaterThan",
            "isLessThan",
            "isIP",
            "isCIDR",
            "ip.isCanonical",
            "isQuantity",
            "isSemver",
            "isURL",
            "hasValue",
        ),
        BOOL,
    ),
    "asApproximateFloat": DOUBLE,
    "jsonpatch.escapeKey": STRING,
    "getQuery": map_of(STRING, list_of(STRING)),
}


def _k8s_library(fn: str, target: CelType | None, args: list[CelType]) -> tuple[list[str], CelType] | None:
    """Kubernetes' CEL libraries: URLs, IPs and CIDRs, quantities, semver, formats (their own types)."""
    constructors = {"url": URL, "ip": IP, "cidr": CIDR, "quantity": QUANTITY, "semver": SEMVER}
    if target is None and fn in constructors:
        return [f"string_to_{fn}"], constructors[fn]
    if fn == "ip" and target is not None and target.kind == "cidr":
        return ["cidr_ip"], IP
    if fn in ("containsIP", "containsCIDR") and args:
        base = "cidr_contains_ip" if fn == "containsIP" else "cidr_contains_cidr"
        suffix = {"string": "_string", "dyn": "_string"}.get(
            args[0].kind, "_ip" if fn == "containsIP" else ""
        )
        return [base + suffix], BOOL
    if fn == "masked":
        return ["cidr_masked"], CIDR
    if fn in ("add", "sub") and target is not None and target.kind == "quantity":
        return [f"quantity_{fn}"], QUANTITY
    if fn == "format.named":
        return ["format_named"], CelType("optional", (FORMAT,))
    if fn.startswith("format."):
        return [fn.replace(".", "_")], FORMAT
    if fn == "validate":
        return ["format_validate"], CelType("optional", (list_of(STRING),))
    if fn == "value" and target is not None and target.kind == "optional":
        return ["optional_value"], target.params[0]
    if fn in _LIBRARY_RESULTS:
        return [f"{fn}_{target.kind if target is not None else 'global'}"], _LIBRARY_RESULTS[fn]
    return None


class Checker:
    """Assigns a CelType to every expression and overload ids to every call."""

    def __init__(self, root: DeclType) -> None:
        self.root = from_decl(root)
        self.types: dict[Expr, CelType] = {}
        self.overloads: dict[Expr, list[str]] = {}
        self._scopes: list[dict[str, CelType]] = [{"self": self.root, "oldSelf": self.root}]
        self.uses_old_self = False

    def check(self, e: Expr) -> CelType:
        t = self._check(e)
        self.types[e] = t
        return t

    def _lookup(self, name: str) -> CelType | None:
        for scope in reversed(self._scopes):
            if name in scope:
                return scope[name]
        return None

    def _check(self, e: Expr) -> CelType:
        if isinstance(e, Literal):
            return simple(e.kind)
        if isinstance(e, Ident):
            t = self._lookup(e.name)
            if t is not None:
                self.uses_old_self |= e.name == "oldSelf"
                return t
            if e.name in _TYPE_NAMES:
                return TYPE
            raise CelCheckError(f"undeclared reference to '{e.name}'")
        if isinstance(e, Select):
            op = self.check(e.operand)
            if op.kind == "object":
                assert op.decl is not None
                ft = op.decl.fields.get(e.field)
                if ft is None:
                    raise CelCheckError(f"undefined field '{e.field}'")
                return BOOL if e.test_only else from_decl(ft)
            if op.kind == "map":
                return BOOL if e.test_only else op.params[1]
            if op.kind == "dyn":
                return BOOL if e.test_only else DYN
            raise CelCheckError(f"type '{op.kind}' does not support field selection")
        if isinstance(e, ListLit):
            elem = DYN
            for x in e.elements:
                elem = _join(elem, self.check(x))
            return list_of(elem)
        if isinstance(e, MapLit):
            k, v = DYN, DYN
            for ke, ve in e.entries:
                k, v = _join(k, self.check(ke)), _join(v, self.check(ve))
            return map_of(k, v)
        if isinstance(e, Call):
            target = self.check(e.target) if e.target is not None else None
            args = [self.check(a) for a in e.args]
            ids, result = resolve(e.function, target, args)
            self.overloads[e] = ids
            return result
        if isinstance(e, Comprehension):
            return self._comprehension(e)
        raise CelCheckError(f"unsupported expression {type(e).__name__}")

    def _comprehension(self, e: Comprehension) -> CelType:
        rng = self.check(e.iter_range)
        if rng.kind in {"list", "map"}:
            var = rng.params[0]
        elif rng.kind == "dyn":
            var = DYN
        else:
            raise CelCheckError(f"expression of type '{rng.kind}' cannot be range of a comprehension")
        scope = {e.iter_var: var}
        if e.iter_var2 is not None:  # (index, value) of a list, (key, value) of a map
            scope = {
                e.iter_var: INT if rng.kind == "list" else var,
                e.iter_var2: rng.params[-1] if rng.params else DYN,
            }
        accu = self.check(e.accu_init)
        for _ in range(2):  # a second pass once the accumulator's element type is known (map/filter)
            self._scopes.append({e.accu_var: accu, **scope})
            self.check(e.loop_condition)
            step = self.check(e.loop_step)
            self._scopes.pop()
            if step == accu or step.kind == "dyn":
                break
            accu = _join(accu, step)
        self._scopes.append({e.accu_var: accu})
        result = self.check(e.result)
        self._scopes.pop()
        return result
