"""Sizes and costs as cel-go counts them: saturating uint64 [min, max] ranges, the cost constants, AST nodes.

cel-go common/cost.go and checker/cost.go: SizeEstimate and CostEstimate share this arithmetic (adds and
multiplies saturate at 2^64-1; cost factors round up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .celast import Expr
from .checker import CelType

MAX_U64 = 2**64 - 1
SELECT_AND_IDENT_COST = 1
CONST_COST = 0
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25
PRESENCE_TEST_COST = 0  # environment/base.go: cel.CostEstimatorOptions(checker.PresenceTestHasCost(false))


def add_u64(x: int, y: int) -> int:
    return min(x + y, MAX_U64)


def mul_u64(x: int, y: int) -> int:
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
        return Est(add_u64(self.min, o.min), add_u64(self.max, o.max))

    def mul(self, o: Est) -> Est:
        return Est(mul_u64(self.min, o.min), mul_u64(self.max, o.max))

    def factor(self, f: float) -> Est:
        return Est(_by_factor(self.min, f), _by_factor(self.max, f))

    def union(self, o: Est) -> Est:
        return Est(min(self.min, o.min), max(self.max, o.max))


def fixed(v: int) -> Est:
    return Est(v, v)


UNKNOWN = Est(0, MAX_U64)
SCALARS = {"bool", "double", "duration", "int", "timestamp", "uint"}


@dataclass
class Node:
    """checker.AstNode: a field path from a variable, the type, the expression and its computed size."""

    path: list[str] | None
    type: CelType
    expr: Expr | None
    computed_size: Est | None = None


@dataclass(frozen=True)
class CallEst:
    cost: Est
    result_size: Est | None = None
