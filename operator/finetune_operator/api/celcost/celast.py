"""CEL expressions as cel-go's checker sees them: parsed by cel-python, macros expanded like cel-go's parser.

cel-python gives a Lark parse tree; the estimator needs cel-go's AST (ident, select, call, list, map,
comprehension), with `has()`, `all()`, `exists()`, `exists_one()`, `map()` and `filter()` expanded into
comprehensions exactly as `cel-go/parser/macro.go` expands them, because the cost of a macro is the cost
of its expansion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import lark
from celpy.celparser import CELParseError, CELParser

ACCU = "@result"  # cel-go parser.AccumulatorName
_Tree: TypeAlias = "lark.Tree[Any]"


class CelSyntaxError(ValueError):
    """The rule does not parse, or uses syntax the estimator does not model."""


@dataclass(eq=False)
class Expr:
    """Base of the AST; nodes hash by identity (cel-go keys its bookkeeping by expression id)."""


@dataclass(eq=False)
class Literal(Expr):
    kind: str  # string, bytes, int, uint, double, bool, null
    value: object


@dataclass(eq=False)
class Ident(Expr):
    name: str


@dataclass(eq=False)
class Select(Expr):
    operand: Expr
    field: str
    test_only: bool = False


@dataclass(eq=False)
class Call(Expr):
    function: str
    args: list[Expr]
    target: Expr | None = None


@dataclass(eq=False)
class ListLit(Expr):
    elements: list[Expr]


@dataclass(eq=False)
class MapLit(Expr):
    entries: list[tuple[Expr, Expr]]


@dataclass(eq=False)
class Comprehension(Expr):
    iter_range: Expr
    iter_var: str
    accu_var: str
    accu_init: Expr
    loop_condition: Expr
    loop_step: Expr
    result: Expr
    iter_var2: str | None = None


@dataclass
class _Converter:
    errors: list[str] = field(default_factory=list)

    def expr(self, t: _Tree) -> Expr:
        kids = t.children
        if len(kids) == 3:
            return Call("_?_:_", [self.node(kids[0]), self.node(kids[1]), self.node(kids[2])])
        return self.node(kids[0])

    def node(self, t: object) -> Expr:
        if not isinstance(t, lark.Tree):
            raise CelSyntaxError(f"unexpected token {t!r}")
        method = getattr(self, "t_" + str(t.data), None)
        if method is None:
            raise CelSyntaxError(f"unsupported CEL construct: {t.data}")
        result: Expr = method(t)
        return result

    t_expr = expr

    def _binary(self, t: _Tree, op: str) -> Expr:
        kids = t.children
        if len(kids) == 1:
            return self.node(kids[0])
        return Call(op, [self.node(kids[0]), self.node(kids[1])])

    def t_conditionalor(self, t: _Tree) -> Expr:
        return self._binary(t, "_||_")

    def t_conditionaland(self, t: _Tree) -> Expr:
        return self._binary(t, "_&&_")

    _OPS = {
        "relation_lt": "_<_",
        "relation_le": "_<=_",
        "relation_gt": "_>_",
        "relation_ge": "_>=_",
        "relation_eq": "_==_",
        "relation_ne": "_!=_",
        "relation_in": "@in",
        "addition_add": "_+_",
        "addition_sub": "_-_",
        "multiplication_mul": "_*_",
        "multiplication_div": "_/_",
        "multiplication_mod": "_%_",
    }

    def _operator(self, t: _Tree) -> Expr:
        kids = t.children
        if len(kids) == 1:
            return self.node(kids[0])
        op_tree = kids[0]
        assert isinstance(op_tree, lark.Tree)
        return Call(self._OPS[str(op_tree.data)], [self.node(op_tree.children[0]), self.node(kids[1])])

    t_relation = t_addition = t_multiplication = _operator

    def t_unary(self, t: _Tree) -> Expr:
        kids = t.children
        if len(kids) == 1:
            return self.node(kids[0])
        op = kids[0]
        assert isinstance(op, lark.Tree)
        return Call("!_" if op.data == "unary_not" else "-_", [self.node(kids[1])])

    def t_member(self, t: _Tree) -> Expr:
        return self.node(t.children[0])

    t_primary = t_paren_expr = t_member

    def t_member_dot(self, t: _Tree) -> Expr:
        return Select(self.node(t.children[0]), str(t.children[1]))

    def _args(self, kids: list[object]) -> list[Expr]:
        out: list[Expr] = []
        for k in kids:
            if isinstance(k, lark.Tree) and k.data == "exprlist":
                out.extend(self.node(e) for e in k.children)
        return out

    def t_member_dot_arg(self, t: _Tree) -> Expr:
        target = self.node(t.children[0])
        name = str(t.children[1])
        args = self._args(t.children[2:])
        namespace = _qualified_name(target)
        if f"{namespace}.{name}" in QUALIFIED_FUNCTIONS or namespace == "format":
            # the checker resolves `ns.fn(...)` to the global function "ns.fn" (no receiver)
            return Call(f"{namespace}.{name}", args)
        return expand_member_macro(name, target, args) or Call(name, args, target)

    def t_member_index(self, t: _Tree) -> Expr:
        return Call("_[_]", [self.node(t.children[0]), self.node(t.children[1])])

    def t_ident_arg(self, t: _Tree) -> Expr:
        name = str(t.children[0])
        args = self._args(t.children[1:])
        if name == "has":
            if len(args) != 1 or not isinstance(args[0], Select):
                raise CelSyntaxError("invalid argument to has() macro")
            return Select(args[0].operand, args[0].field, test_only=True)
        return Call(name, args)

    def t_dot_ident_arg(self, t: _Tree) -> Expr:
        return Call(str(t.children[0]), self._args(t.children[1:]))

    def t_dot_ident(self, t: _Tree) -> Expr:
        return Ident(str(t.children[0]))

    def t_ident(self, t: _Tree) -> Expr:
        return Ident(str(t.children[0]))

    def t_list_lit(self, t: _Tree) -> Expr:
        return ListLit(self._args(t.children))

    def t_map_lit(self, t: _Tree) -> Expr:
        entries: list[tuple[Expr, Expr]] = []
        for k in t.children:
            if isinstance(k, lark.Tree) and k.data == "mapinits":
                items = [self.node(e) for e in k.children]
                entries.extend(zip(items[0::2], items[1::2], strict=True))
        return MapLit(entries)

    def t_literal(self, t: _Tree) -> Expr:
        tok = t.children[0]
        assert isinstance(tok, lark.Token)
        return literal(tok.type, str(tok))


def literal(token_type: str, text: str) -> Literal:
    if token_type in ("STRING_LIT", "MLSTRING_LIT"):
        return Literal("string", decode_string(text))
    if token_type == "BYTES_LIT":
        return Literal("bytes", decode_bytes(text[1:]))
    if token_type == "INT_LIT":
        return Literal("int", int(text, 16 if "x" in text.lower() else 10))
    if token_type == "UINT_LIT":
        return Literal("uint", int(text[:-1], 16 if "x" in text.lower() else 10))
    if token_type == "FLOAT_LIT":
        return Literal("double", float(text))
    if token_type == "BOOL_LIT":
        return Literal("bool", text == "true")
    if token_type == "NULL_LIT":
        return Literal("null", None)
    raise CelSyntaxError(f"unknown literal {text!r}")


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}


def _unescape(text: str, as_bytes: bool) -> list[int | str]:
    """Decode a CEL string/bytes literal body to code points (str) or raw bytes (int)."""
    raw = text[:1] in "rR"
    if raw:
        text = text[1:]
    quote = 3 if text[:3] in ('"""', "'''") else 1
    body = text[quote:-quote]
    if raw:
        return list(body)
    out: list[int | str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[n])
            i += 2
        elif n in "xX":
            v = int(body[i + 2 : i + 4], 16)
            out.append(v if as_bytes else chr(v))
            i += 4
        elif n == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif n == "U":
            out.append(chr(int(body[i + 2 : i + 10], 16)))
            i += 10
        else:
            v = int(body[i + 1 : i + 4], 8)
            out.append(v if as_bytes else chr(v))
            i += 4
    return out


def decode_string(text: str) -> str:
    return "".join(c if isinstance(c, str) else chr(c) for c in _unescape(text, as_bytes=False))


def decode_bytes(text: str) -> bytes:
    out = bytearray()
    for c in _unescape(text, as_bytes=True):
        out.extend(c.encode() if isinstance(c, str) else bytes([c]))
    return bytes(out)


def _ident_name(e: Expr) -> str:
    if not isinstance(e, Ident):
        raise CelSyntaxError("argument must be a simple name")
    if e.name in (ACCU, "__result__"):
        raise CelSyntaxError("iteration variable overwrites accumulator variable")
    return e.name


# global functions with qualified names in the Kubernetes CEL environment (and every `format.*` of its
# Format library); cel-go's checker resolves `ns.fn(...)` to them before trying a member call
QUALIFIED_FUNCTIONS = {
    "strings.quote", "ip.isCanonical", "jsonpatch.escapeKey", "sets.contains", "sets.equivalent",
    "sets.intersects", "optional.of", "optional.none", "optional.ofNonZeroValue",
}  # fmt: skip


def _qualified_name(e: Expr) -> str | None:
    if isinstance(e, Ident):
        return e.name
    if isinstance(e, Select) and not e.test_only:
        inner = _qualified_name(e.operand)
        return f"{inner}.{e.field}" if inner else None
    return None


def _accu() -> Ident:
    return Ident(ACCU)  # a fresh node at each use, as eh.NewAccuIdent()


def expand_member_macro(name: str, target: Expr, args: list[Expr]) -> Expr | None:
    """cel-go's receiver-style macros (parser/macro.go), or None when `name(args)` is a plain call."""
    if name in ("all", "exists", "exists_one") and len(args) == 2:
        v = _ident_name(args[0])
        if name == "all":
            init: Expr = Literal("bool", True)
            cond: Expr = Call("@not_strictly_false", [_accu()])
            step: Expr = Call("_&&_", [_accu(), args[1]])
            result: Expr = _accu()
        elif name == "exists":
            init = Literal("bool", False)
            cond = Call("@not_strictly_false", [Call("!_", [_accu()])])
            step = Call("_||_", [_accu(), args[1]])
            result = _accu()
        else:
            init = Literal("int", 0)
            cond = Literal("bool", True)
            step = Call("_?_:_", [args[1], Call("_+_", [_accu(), Literal("int", 1)]), _accu()])
            result = Call("_==_", [_accu(), Literal("int", 1)])
        return Comprehension(target, v, ACCU, init, cond, step, result)
    if name == "map" and len(args) in (2, 3):
        v = _ident_name(args[0])
        fn = args[-1]
        step = Call("_+_", [_accu(), ListLit([fn])])
        if len(args) == 3:
            step = Call("_?_:_", [args[1], step, _accu()])
        return Comprehension(target, v, ACCU, ListLit([]), Literal("bool", True), step, _accu())
    if name == "filter" and len(args) == 2:
        v = _ident_name(args[0])
        step = Call("_+_", [_accu(), ListLit([args[0]])])
        step = Call("_?_:_", [args[1], step, _accu()])
        return Comprehension(target, v, ACCU, ListLit([]), Literal("bool", True), step, _accu())
    if name in _TWO_VAR and len(args) in _TWO_VAR[name]:
        return _two_var(name, target, args)
    return None


# cel-go ext.TwoVarComprehensions (Kubernetes 1.32+): receiver macros and their argument counts
_TWO_VAR = {
    "all": (3,),
    "exists": (3,),
    "existsOne": (3,),
    "exists_one": (3,),
    "transformList": (3, 4),
    "transformMap": (3, 4),
    "transformMapEntry": (3, 4),
}


def _two_var(name: str, target: Expr, args: list[Expr]) -> Comprehension:
    """ext/comprehensions.go: the same accumulators as the one-variable macros, or a list/map builder."""
    v1, v2 = _ident_name(args[0]), _ident_name(args[1])
    init: Expr
    cond: Expr = Literal("bool", True)
    result: Expr = _accu()
    if name == "all":
        init = Literal("bool", True)
        cond = Call("@not_strictly_false", [_accu()])
        step: Expr = Call("_&&_", [_accu(), args[2]])
    elif name == "exists":
        init = Literal("bool", False)
        cond = Call("@not_strictly_false", [Call("!_", [_accu()])])
        step = Call("_||_", [_accu(), args[2]])
    elif name in ("existsOne", "exists_one"):
        init = Literal("int", 0)
        step = Call("_?_:_", [args[2], Call("_+_", [_accu(), Literal("int", 1)]), _accu()])
        result = Call("_==_", [_accu(), Literal("int", 1)])
    else:
        transform = args[-1]
        if name == "transformList":
            init = ListLit([])
            step = Call("_+_", [_accu(), ListLit([transform])])
        elif name == "transformMap":
            init = MapLit([])
            step = Call("cel.@mapInsert", [_accu(), Ident(v1), transform])
        else:
            init = MapLit([])
            step = Call("cel.@mapInsert", [_accu(), transform])
        if len(args) == 4:
            step = Call("_?_:_", [args[2], step, _accu()])
    return Comprehension(target, v1, ACCU, init, cond, step, result, iter_var2=v2)


_PARSER: CELParser | None = None


def parse(text: str) -> Expr:
    """Parse one CEL expression into cel-go's AST shape, macros expanded."""
    global _PARSER
    if _PARSER is None:
        _PARSER = CELParser()
    try:
        tree = _PARSER.parse(text)
    except CELParseError as exc:
        raise CelSyntaxError(f"Syntax error: {exc}") from exc
    return _Converter().node(tree)
