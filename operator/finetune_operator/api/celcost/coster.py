"""cel-go's static cost estimator (checker/cost.go), driven by Kubernetes' CostEstimator (library.py).

The walk, the size bookkeeping (field paths, computed sizes, entry sizes of lists and maps) and every
constant follow cel-go; `has()` costs nothing beyond its operand because the Kubernetes base
environment sets `PresenceTestHasCost(false)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .celast import ACCU, Call, Comprehension, Expr, Ident, ListLit, Literal, MapLit, Select
from .checker import CelType, Checker
from .decltypes import DeclType
from .estimates import (
    CONST_COST,
    LIST_CREATE_BASE_COST,
    MAP_CREATE_BASE_COST,
    MAX_U64,
    PRESENCE_TEST_COST,
    REGEX_STRING_LENGTH_COST_FACTOR,
    SCALARS,
    SELECT_AND_IDENT_COST,
    STRING_TRAVERSAL_COST_FACTOR,
    UNKNOWN,
    CallEst,
    Est,
    Node,
    add_u64,
    fixed,
    mul_u64,
)
from .library import K8sEstimator


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
        if self._type(e).kind in SCALARS:
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
            return CallEst(sz.factor(f).add(arg_sum), Est(sz.min, mul_u64(sz.max, 4)))
        if oid == "bytes_to_string" and len(args) == 1:
            sz = size(args[0])
            return CallEst(sz.factor(f).add(arg_sum), Est(sz.min // 4, sz.max))
        if oid == "strings_quote" and len(args) == 1:
            sz = size(args[0])
            return CallEst(sz.factor(f).add(arg_sum), Est(add_u64(sz.min, 2), add_u64(mul_u64(sz.max, 2), 2)))
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
        if e.iter_var2 is not None:
            self._push_iter_pair(e.iter_var, e.iter_var2, e.iter_range)
        else:
            self._push_iter(e.iter_var, e.iter_range)
        loop = self.cost(e.loop_condition)
        step = self.cost(e.loop_step)
        self._pop(e.iter_var)
        if e.iter_var2 is not None:
            self._pop(e.iter_var2)
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

    def _push_iter_pair(self, key_name: str, value_name: str, rng: Expr) -> None:
        """pushIterKey / pushIterValue: a list's (index, item), a map's (key, value)."""
        entry = self._entry(rng)
        container = entry.container if entry is not None else self._type(rng).kind
        path = self._path(rng)
        key_sub, value_sub = ("@indices", "@items") if container == "list" else ("@keys", "@values")
        key_size = entry.key if entry is not None else None
        value_size = entry.val if entry is not None else None
        self._push(key_name, _LocalVar([*path, key_sub], key_size, None))
        self._push(value_name, _LocalVar([*path, value_sub], value_size, None))

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
