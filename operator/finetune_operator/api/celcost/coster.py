"""cel-go's static cost estimator (checker/cost.go) with Kubernetes' CostEstimator (apiserver cel/library/cost.go).

The walk, the size bookkeeping (field paths, computed sizes, entry sizes of lists and maps) and every
constant follow cel-go; `has()` costs nothing beyond its operand because the Kubernetes base
environment sets `PresenceTestHasCost(false)`. Sizes of schema fields come from the DeclType via the
field path, exactly as apiextensions' sizeEstimator does (including its habit of dropping the first
path element, whatever variable it names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .celast import ACCU, Call, Comprehension, Expr, Ident, ListLit, Literal, MapLit, Select
from .checker import CelType, Checker
from .decltypes import DeclType

MAX_U64 = 2**64 - 1
SELECT_AND_IDENT_COST = 1
CONST_COST = 0
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25
PRESENCE_TEST_COST = 0  # environment/base.go: cel.CostEstimatorOptions(checker.PresenceTestHasCost(false))


def _add(x: int, y: int) -> int:
    return min(x + y, MAX_U64)


def _mul(x: int, y: int) -> int:
    return min(x * y, MAX_U64)


def _by_factor(x: int, f: float) -> int:
    xf = float(x)
    if xf > 0 and f > 0 and xf > MAX_U64 / f:
        return MAX_U64
    c = math.ceil(xf * f)
    return MAX_U64 if c >= 2**64 else int(c)


@dataclass(frozen=True)
class Est:
    """A [min, max] range; cel-go's SizeEstimate and CostEstimate share this arithmetic."""

    min: int
    max: int

    def add(self, o: Est) -> Est:
        return Est(_add(self.min, o.min), _add(self.max, o.max))

    def mul(self, o: Est) -> Est:
        return Est(_mul(self.min, o.min), _mul(self.max, o.max))

    def factor(self, f: float) -> Est:
        return Est(_by_factor(self.min, f), _by_factor(self.max, f))

    def union(self, o: Est) -> Est:
        return Est(min(self.min, o.min), max(self.max, o.max))


def fixed(v: int) -> Est:
    return Est(v, v)


UNKNOWN = Est(0, MAX_U64)
_SCALARS = {"bool", "double", "duration", "int", "timestamp", "uint"}


@dataclass
class Node:
    """checker.AstNode: a field path from a variable, the type, the expression and its computed size."""

    path: list[str] | None
    type: CelType
    expr: Expr | None
    computed_size: Est | None = None


@dataclass(frozen=True)
class Entry:
    container: str  # list or map
    key: Est
    val: Est


def _union_entry(a: Entry | None, b: Entry | None) -> Entry | None:
    if a is None or b is None:
        return None
    return Entry(a.container, a.key.union(b.key), a.val.union(b.val))


@dataclass
class _LocalVar:
    path: list[str]
    size: Est | None
    entry: Entry | None


@dataclass(frozen=True)
class CallEst:
    cost: Est
    result_size: Est | None = None


class K8sEstimator:
    """library.CostEstimator wrapping apiextensions' sizeEstimator over the rule's DeclType."""

    def __init__(self, root: DeclType) -> None:
        self.root = root

    def estimate_size(self, node: Node) -> Est | None:
        if not node.path:
            return None
        cur = self.root
        for name in node.path[1:]:  # "cut off self from path, since we always start there"
            nxt = (
                cur.elem
                if name in ("@items", "@values")
                else cur.key
                if name == "@keys"
                else cur.fields.get(name)
            )
            if nxt is None:
                return None
            cur = nxt
        return Est(0, cur.max_elements)

    def _size(self, node: Node) -> Est:
        return node.computed_size or self.estimate_size(node) or UNKNOWN

    def _list_element(self, lst: Node) -> Node | None:
        if not lst.type.params:
            return None
        return Node([*lst.path, "@items"] if lst.path else None, lst.type.params[0], None)

    def call_cost(self, fn: str, overload: str, target: Node | None, args: list[Node]) -> CallEst | None:
        f = STRING_TRAVERSAL_COST_FACTOR
        if fn == "check":
            return CallEst(fixed(350000))
        if fn in ("serviceAccount", "path", "group", "resource", "subresource", "namespace", "name",
                  "allowed", "reason", "error", "errored"):  # fmt: skip
            return CallEst(fixed(1))
        if fn in ("isSorted", "sum", "max", "min", "indexOf", "lastIndexOf") and target is not None:
            el = self._list_element(target)
            if el is not None:
                el_cost = fixed(1)
                if el.type.kind in ("string", "bytes"):
                    el_cost = el_cost.add(self._size(el).factor(f))
                return CallEst(self._size(target).mul(el_cost))
            return CallEst(self._size(target).factor(f))
        if fn == "url" and len(args) == 1:
            return CallEst(self._size(args[0]).factor(f))
        if fn in ("lowerAscii", "upperAscii", "substring", "trim") and target is not None:
            sz = self._size(target)
            return CallEst(sz.factor(f), sz)
        if fn == "replace" and target is not None and len(args) >= 2:
            return self._replace(target, args)
        if fn == "split" and target is not None:
            sz = self._size(target)
            top = sz.max
            if len(args) > 1 and isinstance(args[1].expr, Literal) and isinstance(args[1].expr.value, int):
                top = args[1].expr.value % 2**64
            return CallEst(sz.factor(2 * f), Est(0, top))
        if fn == "join" and target is not None:
            lst = self._size(target)
            el = self._list_element(target)
            sz = lst.mul(self._size(el)) if el is not None else Est(0, 0)
            if args:
                seps = Est(max(lst.min - 1, 0), max(lst.max - 1, 0))
                sz = sz.add(self._size(args[0]).mul(seps))
            return CallEst(sz.factor(f), sz)
        if fn in ("find", "findAll") and target is not None and args:
            sz = self._size(target)
            str_cost = sz.add(fixed(1)).factor(f)
            regex_cost = self._size(args[0]).factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return CallEst(str_cost.mul(regex_cost), Est(0, sz.max))
        if fn in ("cidr", "isIP", "isCIDR", "quantity", "isQuantity") and target is not None and args:
            return CallEst(self._size(args[0]).factor(f))
        if fn == "ip" and target is not None:
            if args and overload != "cidr_ip":
                return CallEst(self._size(args[0]).factor(f))
            return CallEst(fixed(1))
        if fn == "ip.isCanonical" and target is not None and args:
            return CallEst(self._size(args[0]).factor(2 * f))
        if fn in ("masked", "prefixLength", "family", "isUnspecified", "isLoopback", "isLinkLocalMulticast",
                  "isLinkLocalUnicast", "sign", "asInteger", "isInteger", "asApproximateFloat",
                  "isGreaterThan", "isLessThan", "compareTo", "add", "sub"):  # fmt: skip
            return CallEst(fixed(1))
        if fn in ("containsIP", "containsCIDR") and target is not None and args:
            sz = Est(4, 16)
            cost = sz.add(sz).factor(f)
            if fn == "containsCIDR":
                cost = cost.add(sz.factor(f)).add(fixed(1))
            if overload in ("cidr_contains_ip_string", "cidr_contains_cidr_string"):
                cost = cost.add(self._size(args[0]).factor(f))
            return CallEst(cost)
        return None

    def _replace(self, target: Node, args: list[Node]) -> CallEst:
        sz, old, new = self._size(target), self._size(args[0]), self._size(args[1])
        if old.min == 0:
            count_max, kept_max = (sz.max + 1 if sz.max < MAX_U64 else sz.max), sz.max
        elif new.max <= old.min:
            count_max, kept_max = 0, sz.max
        else:
            count_max, kept_max = math.ceil(sz.max / old.min), 0
        if old.max == 0:
            count_min, kept_min = (sz.min + 1 if sz.min < MAX_U64 else sz.min), sz.min
        elif old.max <= new.min:
            count_min, kept_min = 0, sz.min
        else:
            count_min, kept_min = math.ceil(sz.min / old.max), 0
        size = Est(count_min, count_max).mul(new).add(Est(kept_min, kept_max))
        return CallEst(sz.factor(2 * STRING_TRAVERSAL_COST_FACTOR), size)


class Coster:
    """One rule's worst-case cost (checker.Cost): call `cost(expr).max`."""

    def __init__(self, checker: Checker, estimator: K8sEstimator) -> None:
        self.checker = checker
        self.estimator = estimator
        self.paths: dict[Expr, list[str]] = {}
        self.local_vars: dict[str, list[_LocalVar]] = {}
        self.sizes: dict[Expr, Est] = {}
        self.entries: dict[Expr, Entry] = {}

    # --- bookkeeping -------------------------------------------------------------------------------
    def _type(self, e: Expr) -> CelType:
        return self.checker.types[e]

    def _peek(self, name: str) -> _LocalVar | None:
        stack = self.local_vars.get(name)
        return stack[-1] if stack else None

    def _push(self, name: str, var: _LocalVar) -> None:
        self.local_vars.setdefault(name, []).append(var)

    def _pop(self, name: str) -> None:
        self.local_vars[name].pop()

    def _path(self, e: Expr) -> list[str]:
        if isinstance(e, Ident):
            v = self._peek(e.name)
            if v is not None:
                return list(v.path)
        return list(self.paths.get(e, []))

    def _set_size(self, e: Expr, size: Est | None) -> None:
        if size is not None:
            self.sizes[e] = size

    def _set_entry(self, e: Expr, entry: Entry | None) -> None:
        if entry is not None:
            self.entries[e] = entry

    def _entry(self, e: Expr) -> Entry | None:
        if e in self.entries:
            return self.entries[e]
        if isinstance(e, Ident):
            v = self._peek(e.name)
            if v is not None and v.entry is not None:
                return v.entry
        return None

    def compute_size(self, e: Expr) -> Est | None:
        if e in self.sizes:
            return self.sizes[e]
        if isinstance(e, Literal):
            if e.kind == "string":
                assert isinstance(e.value, str)
                return fixed(len(e.value))
            if e.kind == "bytes":
                assert isinstance(e.value, bytes)
                return fixed(len(e.value))
            return fixed(1)
        if isinstance(e, ListLit):
            return fixed(len(e.elements))
        if isinstance(e, MapLit):
            return fixed(len(e.entries))
        size = self.estimator.estimate_size(Node(self._path(e), self._type(e), e))
        if size is not None:
            self.sizes[e] = size
            return size
        if self._type(e).kind in _SCALARS:
            return fixed(1)
        if isinstance(e, Ident):
            v = self._peek(e.name)
            if v is not None and v.size is not None:
                return v.size
        return None

    def _size_or_unknown(self, e: Expr | Node) -> Est:
        if isinstance(e, Node):
            return e.computed_size or UNKNOWN
        return self.compute_size(e) or UNKNOWN

    def _node(self, e: Expr) -> Node:
        path: list[str] | None = self._path(e)
        if path and path[0] in (ACCU, "__result__"):
            path = None  # only provide paths to root vars; omit accumulator vars
        return Node(path, self._type(e), e, self.compute_size(e))

    # --- the walk ------------------------------------------------------------------------------------
    def cost(self, e: Expr) -> Est:
        if isinstance(e, Literal):
            return fixed(CONST_COST)
        if isinstance(e, Ident):
            v = self._peek(e.name)
            self.paths[e] = list(v.path) if v is not None else [e.name]
            return fixed(SELECT_AND_IDENT_COST)
        if isinstance(e, Select):
            if e.test_only:
                return fixed(PRESENCE_TEST_COST).add(self.cost(e.operand))
            total = self.cost(e.operand)
            if self._type(e.operand).kind in ("map", "object"):
                total = total.add(fixed(SELECT_AND_IDENT_COST))
            self.paths[e] = [*self._path(e.operand), e.field]
            return total
        if isinstance(e, Call):
            return self._call(e)
        if isinstance(e, ListLit):
            total, item = Est(0, 0), Est(MAX_U64 if e.elements else 0, 0)
            for x in e.elements:
                total = total.add(self.cost(x))
                item = item.union(self._size_or_unknown(x))
            self._set_entry(e, Entry("list", fixed(1), item))
            return total.add(fixed(LIST_CREATE_BASE_COST))
        if isinstance(e, MapLit):
            total = Est(0, 0)
            lo = MAX_U64 if e.entries else 0
            key, val = Est(lo, 0), Est(lo, 0)
            for ke, ve in e.entries:
                total = total.add(self.cost(ke)).add(self.cost(ve))
                key, val = key.union(self._size_or_unknown(ke)), val.union(self._size_or_unknown(ve))
            self._set_entry(e, Entry("map", key, val))
            return total.add(fixed(MAP_CREATE_BASE_COST))
        if isinstance(e, Comprehension):
            return self._comprehension(e)
        return Est(0, 0)

    def _call(self, e: Call) -> Est:
        if e.function == "dyn" and e.args:
            arg_cost = self.cost(e.args[0])
            self._set_size(e, self.compute_size(e.args[0]))
            self._set_entry(e, self._entry(e.args[0]))
            return fixed(1).add(arg_cost)
        arg_costs, arg_nodes = [], []
        for a in e.args:
            arg_costs.append(self.cost(a))
            arg_nodes.append(self._node(a))
        ids = self.checker.overloads.get(e, [])
        if not ids:
            return Est(0, 0)
        total = Est(0, 0)
        target: Node | None = None
        if e.target is not None:
            total = total.add(self.cost(e.target))
            target = self._node(e.target)
        fn_cost = Est(MAX_U64, 0)
        result: Est | None = None
        for oid in ids:
            oc = self._function_cost(e, oid, target, arg_nodes, arg_costs)
            fn_cost = fn_cost.union(oc.cost)
            if oc.result_size is not None:
                result = oc.result_size if result is None else result.union(oc.result_size)
            if oid in ("index_list", "index_map") and e.args:
                entry = self._entry(e.args[0])
                result = entry.val if entry is not None else None
                self.paths[e] = [*self._path(e.args[0]), "@items" if oid == "index_list" else "@values"]
            if result is None:
                result = self.compute_size(e)
        self._set_size(e, result)
        return total.add(fn_cost)

    def _function_cost(
        self, e: Call, oid: str, target: Node | None, args: list[Node], costs: list[Est]
    ) -> CallEst:
        arg_sum = Est(0, 0)
        for c in costs:
            arg_sum = arg_sum.add(c)
        est = self.estimator.call_cost(e.function, oid, target, args)
        if est is not None:
            return CallEst(est.cost.add(arg_sum), est.result_size)
        f = STRING_TRAVERSAL_COST_FACTOR
        size = self._size_or_unknown
        if oid == "string_format" and target is not None:
            t = size(target)
            return CallEst(t.factor(f).add(arg_sum), t.add(size(args[0])) if args else t)
        if oid == "string_to_bytes" and len(args) == 1:
            sz = size(args[0])
            return CallEst(sz.factor(f).add(arg_sum), Est(sz.min, _mul(sz.max, 4)))
        if oid == "bytes_to_string" and len(args) == 1:
            sz = size(args[0])
            return CallEst(sz.factor(f).add(arg_sum), Est(sz.min // 4, sz.max))
        if oid == "strings_quote" and len(args) == 1:
            sz = size(args[0])
            return CallEst(sz.factor(f).add(arg_sum), Est(_add(sz.min, 2), _add(_mul(sz.max, 2), 2)))
        if oid in ("starts_with_string", "ends_with_string") and len(args) == 1:
            return CallEst(size(args[0]).factor(f).add(arg_sum))
        if oid == "in_list" and len(args) == 2:
            return CallEst(size(args[1]).factor(1).add(arg_sum))
        if oid == "matches_string" and target is not None and len(args) == 1:
            str_cost = size(target).add(fixed(1)).factor(f)
            regex_cost = size(args[0]).factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return CallEst(str_cost.mul(regex_cost).add(arg_sum))
        if oid == "contains_string" and target is not None and len(args) == 1:
            return CallEst(size(target).factor(f).mul(size(args[0]).factor(f)).add(arg_sum))
        if oid in ("logical_or", "logical_and"):
            lhs, rhs = costs
            return CallEst(Est(lhs.min, lhs.add(rhs).max))
        if oid == "conditional":
            sz = size(args[1]).union(size(args[2]))
            assert args[1].expr is not None and args[2].expr is not None
            self._set_entry(e, _union_entry(self._entry(args[1].expr), self._entry(args[2].expr)))
            return CallEst(costs[0].add(costs[1].union(costs[2])), sz)
        if oid in ("add_string", "add_bytes", "add_list") and len(args) == 2:
            result = size(args[0]).add(size(args[1]))
            assert args[0].expr is not None and args[1].expr is not None
            entry = _union_entry(self._entry(args[0].expr), self._entry(args[1].expr))
            self._set_entry(e, entry)
            if oid == "add_list":
                return CallEst(fixed(1).add(arg_sum), result)
            return CallEst(result.factor(f).add(arg_sum), result)
        if oid in _SIZED_COMPARISONS:
            smallest = min(size(args[0]).max, size(args[1]).max)
            return CallEst(Est(1 if smallest > 0 else 0, smallest).factor(f).add(arg_sum))
        return CallEst(fixed(1).add(arg_sum))

    def _comprehension(self, e: Comprehension) -> Est:
        if (
            isinstance(e.iter_range, ListLit)
            and not e.iter_range.elements
            and isinstance(e.loop_condition, Literal)
            and e.loop_condition.value is False
            and e.accu_var != ACCU
        ):  # cel.bind(): lazily initialised, no loop
            total = self.cost(e.iter_range).add(self.cost(e.accu_init))
            self._push_local(e.accu_var, e.accu_init)
            total = total.add(self.cost(e.result))
            self._pop(e.accu_var)
            self._set_size(e, self.compute_size(e.result))
            self._set_entry(e, self._entry(e.result))
            return total
        total = self.cost(e.iter_range).add(self.cost(e.accu_init))
        self._push_local(e.accu_var, e.accu_init)
        self._push_iter(e.iter_var, e.iter_range)
        loop = self.cost(e.loop_condition)
        step = self.cost(e.loop_step)
        self._pop(e.iter_var)
        total = total.add(self.cost(e.result))
        self._pop(e.accu_var)
        count = self._size_or_unknown(e.iter_range)
        total = total.add(count.mul(step.add(loop)))
        if isinstance(e.accu_init, Literal):
            self._set_size(e, self.compute_size(e.accu_init))
        elif isinstance(e.accu_init, (ListLit, MapLit)):
            self._set_size(e, count)
            self._set_entry(e, self._entry(e.loop_step))
        return total

    def _push_local(self, name: str, e: Expr) -> None:
        self._push(name, _LocalVar(self._path(e), self.compute_size(e), self._entry(e)))

    def _push_iter(self, name: str, rng: Expr) -> None:
        entry = self._entry(rng)
        container = entry.container if entry is not None else self._type(rng).kind
        if container == "list":
            size, sub = (entry.val if entry is not None else None), "@items"
        else:
            size, sub = (entry.key if entry is not None else None), "@keys"
        self._push(name, _LocalVar([*self._path(rng), sub], size, None))


_SIZED_COMPARISONS = {
    f"{op}_{t}" for op in ("less", "greater", "less_equals", "greater_equals") for t in ("string", "bytes")
} | {"equals", "not_equals"}


def estimate_max_cost(checker: Checker, root: DeclType, expr: Expr) -> int:
    """The worst-case cost of one checked expression, as `cel.Env.EstimateCost(...).Max`."""
    return Coster(checker, K8sEstimator(root)).cost(expr).max
