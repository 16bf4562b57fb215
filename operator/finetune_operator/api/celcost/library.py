"""Kubernetes' CostEstimator (k8s.io/apiserver/pkg/cel/library/cost.go) over apiextensions' sizeEstimator.

`estimate_size` is compilation.go's sizeEstimator: a field path from a variable is walked down the
rule's DeclType (dropping the first element, whatever variable it names) to its max_elements.
`call_cost` is the library's EstimateCallCost, chosen by function name before cel-go's own formulas.
"""

from __future__ import annotations

import math

from .celast import Literal
from .decltypes import DeclType
from .estimates import (
    MAX_U64,
    REGEX_STRING_LENGTH_COST_FACTOR,
    STRING_TRAVERSAL_COST_FACTOR,
    UNKNOWN,
    CallEst,
    Est,
    Node,
    fixed,
)

_NOMINAL = {
    # authorizer builders and accessors
    "serviceAccount", "path", "group", "resource", "subresource", "namespace", "name", "allowed", "reason",
    "error", "errored",
    # IP / CIDR accessors, quantity and semver operations, url accessors, format lookup
    "masked", "prefixLength", "family", "isUnspecified", "isLoopback", "isLinkLocalMulticast",
    "isLinkLocalUnicast", "isGlobalUnicast", "sign", "asInteger", "isInteger", "asApproximateFloat",
    "isGreaterThan", "isLessThan", "compareTo", "add", "sub", "major", "minor", "patch", "getScheme",
    "getHostname", "getHost", "getPort", "getEscapedPath", "getQuery", "format.named",
}  # fmt: skip
_SELECTOR_REQUIREMENTS_PER_CHAR = 0.5  # shortest repeatable selector requirement is 2 characters: "k,"
_COST_PER_REQUIREMENT = 10.0 + 40.0  # a list (ListCreateBaseCost) and a struct (StructCreateBaseCost)


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
        """EstimateCallCost. The cel-go Kubernetes vendors hands the library a non-nil target even for
        global calls, so the `target != nil` guards of the global functions (cidr, isIP, quantity, ...)
        always pass; receiver-only functions (lowerAscii, split, ...) read `target` only when it is one."""
        f = STRING_TRAVERSAL_COST_FACTOR
        if fn == "check":
            return CallEst(fixed(350000))
        if fn in _NOMINAL:
            return CallEst(fixed(1))
        if fn in ("fieldSelector", "labelSelector") and len(args) == 1:
            length = self._size(args[0])
            requirements = length.factor(_SELECTOR_REQUIREMENTS_PER_CHAR).factor(_COST_PER_REQUIREMENT)
            return CallEst(fixed(10).add(length.factor(f)).add(requirements))
        if fn in ("isSorted", "sum", "max", "min", "indexOf", "lastIndexOf") and target is not None:
            el = self._list_element(target)
            if el is not None:
                el_cost = fixed(1)
                if el.type.kind in ("string", "bytes"):
                    el_cost = el_cost.add(self._size(el).factor(f))
                return CallEst(self._size(target).mul(el_cost))
            return CallEst(self._size(target).factor(f))
        if fn in ("url", "jsonpatch.escapeKey") and len(args) == 1:
            sz = self._size(args[0])
            return CallEst(sz.factor(f), sz)
        if fn in ("lowerAscii", "upperAscii", "substring", "trim") and target is not None:
            sz = self._size(target)
            return CallEst(sz.factor(f), sz)
        if fn == "replace" and target is not None and len(args) >= 2:
            return self._replace(target, args)
        if fn == "split" and target is not None:
            sz = self._size(target)
            top = sz.max
            if len(args) > 1 and isinstance(args[1].expr, Literal) and args[1].expr.kind == "int":
                assert isinstance(args[1].expr.value, int)
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
        if fn in ("cidr", "isIP", "isCIDR", "quantity", "isQuantity", "semver", "isSemver") and args:
            return CallEst(self._size(args[0]).factor(f))
        if fn == "ip":
            if args and overload != "cidr_ip":
                return CallEst(self._size(args[0]).factor(f))
            return CallEst(fixed(1))
        if fn == "ip.isCanonical" and args:
            return CallEst(self._size(args[0]).factor(2 * f))
        if fn == "validate" and args:  # a Format's regex is at most MaxNameFormatRegexSize (128) long
            return CallEst(self._size(args[0]).factor(f).factor(128 * REGEX_STRING_LENGTH_COST_FACTOR))
        if fn in ("containsIP", "containsCIDR") and target is not None and args:
            sz = Est(4, 16)  # IPv4 or IPv6 bytes
            cost = sz.add(sz).factor(f)
            if fn == "containsCIDR":
                cost = cost.add(sz.factor(f)).add(fixed(1))
            if overload in ("cidr_contains_ip_string", "cidr_contains_cidr_string"):
                cost = cost.add(self._size(args[0]).factor(f))
            return CallEst(cost)
        if fn == "_==_" and len(args) == 2 and args[0].type == args[1].type:
            kind = args[0].type.kind
            if kind in ("ip", "cidr", "quantity", "semver"):
                return CallEst(fixed(1))
            if kind == "url":  # the server unions the right-hand size with itself
                rhs = args[1].computed_size
                return CallEst(Est(1, rhs.max if rhs is not None else 1).factor(f))
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
