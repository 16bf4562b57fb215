"""Kubernetes' own cost expectations, as data for tests/unit/test_cel_cost.py.

* CASES: TestCostEstimation (apiextensions-apiserver pkg/apiserver/schema/cel/compilation_test.go): a schema
  generator (called with no bound, then with the bound), the MaxCost without bounds (None: above the
  per-call limit), the bound, and the MaxCost with it.
* LIB_CASES: apiserver pkg/cel/library/cost_test.go: literal expressions and their estimated (min, max)
  cost; that test sizes every string and bytes value it cannot see at 0..12.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Gen = Callable[[int | None], dict[str, Any]]


def _leaf(t: str) -> dict[str, Any]:
    if t in ("duration", "date", "date-time"):
        return {"type": "string", "format": t}
    if t == "int-or-string":
        return {"x-kubernetes-int-or-string": True}
    return {"type": t}


def _rule(s: dict[str, Any], rule: str) -> dict[str, Any]:
    return {**s, "x-kubernetes-validations": [{"rule": rule}]}


def _opt(s: dict[str, Any], key: str, v: int | None) -> dict[str, Any]:
    return {**s, key: v} if v is not None else s


REQ_OBJ = {
    "type": "object",
    "required": ["required"],
    "properties": {"required": {"type": "string"}, "optional": {"type": "string"}},
}


def array(t: str, rule: str) -> Gen:
    return lambda m: _rule(_opt({"type": "array", "items": _leaf(t)}, "maxItems", m), rule)


def array_of_arrays(t: str, rule: str) -> Gen:
    return lambda m: _rule(
        _opt({"type": "array", "items": {"type": "array", "items": {"type": t}}}, "maxItems", m), rule
    )


def object_array(rule: str) -> Gen:
    return lambda m: _rule(_opt({"type": "array", "items": REQ_OBJ}, "maxItems", m), rule)


def map_array(t: str, rule: str) -> Gen:
    return lambda m: _rule(
        _opt(
            {"type": "array", "items": {"type": "object", "additionalProperties": {"type": t}}}, "maxItems", m
        ),
        rule,
    )


def map_(t: str, rule: str) -> Gen:
    return lambda m: _rule(
        _opt({"type": "object", "additionalProperties": _leaf(t)}, "maxProperties", m), rule
    )


def map_custom(item: dict[str, Any], rule: str) -> Gen:
    return lambda m: _rule(_opt({"type": "object", "additionalProperties": item}, "maxProperties", m), rule)


def string(rule: str) -> Gen:
    return lambda m: _rule(_opt({"type": "string"}, "maxLength", m), rule)


def enum(rule: str, *values: str) -> Gen:
    return lambda m: _rule(_opt({"type": "string", "enum": list(values)}, "maxLength", m), rule)


def bytes_(rule: str) -> Gen:
    return lambda m: _rule(_opt({"type": "string", "format": "byte"}, "maxLength", m), rule)


def nested_spec(rule: str) -> Gen:
    return lambda m: _rule(
        _opt(
            {"type": "object", "additionalProperties": _opt({"type": "string"}, "maxLength", m)},
            "maxProperties",
            m,
        ),
        rule,
    )


def all_max_nested(rule: str) -> Gen:
    return lambda m: _rule(
        _opt(
            {
                "type": "array",
                "items": _opt(
                    {"type": "object", "additionalProperties": _opt(REQ_OBJ, "maxProperties", m)},
                    "maxProperties",
                    m,
                ),
            },
            "maxItems",
            m,
        ),
        rule,
    )


def one_max_nested(rule: str) -> Gen:
    return lambda m: _rule(
        {
            "type": "array",
            "items": _opt({"type": "object", "additionalProperties": REQ_OBJ}, "maxProperties", m),
        },
        rule,
    )


def join_case(m: int | None) -> dict[str, Any]:
    return _rule(
        _opt({"type": "array", "items": _opt({"type": "string"}, "maxLength", m)}, "maxItems", m),
        "self.join(' ') == 'aa bb'",
    )


def sorted_case(m: int | None) -> dict[str, Any]:
    return _rule(
        _opt({"type": "array", "items": _opt({"type": "string"}, "maxLength", m)}, "maxItems", m),
        "self.isSorted() == true",
    )


def replace_case(m: int | None) -> dict[str, Any]:
    return _rule(
        {
            "type": "object",
            "properties": {
                "str": _opt({"type": "string"}, "maxLength", m),
                "before": {"type": "string", "maxLength": 2},
                "after": {"type": "string", "maxLength": 4},
            },
        },
        "self.str.replace(self.before, self.after) == 'does not matter'",
    )


def split_case(m: int | None) -> dict[str, Any]:
    s = _opt({"type": "string"}, "maxLength", m)
    return _rule(
        {"type": "object", "properties": {"str": s, "separator": s}}, "self.str.split(self.separator) == []"
    )


def lower_case(m: int | None) -> dict[str, Any]:
    return _rule(_opt({"type": "string"}, "maxLength", m), "self.lowerAscii() == 'lower!'")


LIMIT = 1_000_000  # PerCallLimit: "exceeds" cases only need to be above it
# (name, generator, calc cost, set max elements, set cost); None: expected to exceed the limit
CASES: list[tuple[str, Gen, int | None, int, int]] = [
    ("number array with all", array("number", "self.all(x, true)"), 4718591, 10, 32),
    ("string array with all", array("string", "self.all(x, true)"), 3145727, 20, 62),
    ("boolean array with all", array("boolean", "self.all(x, true)"), 1887437, 5, 17),
    ("array of number arrays with all", array_of_arrays("number", "self.all(x, true)"), 3145727, 100, 302),
    ("array of objects with all", object_array("self.all(x, true)"), 555128, 50, 152),
    ("map of numbers with all", map_("number", "self.all(x, true)"), 1348169, 10, 32),
    ("map of strings with all", map_("string", "self.all(x, true)"), 1179647, 3, 11),
    ("map of booleans with all", map_("boolean", "self.all(x, true)"), 943718, 100, 302),
    ("string with contains", string("self.contains('test')"), 314574, 10, 5),
    ("string with startsWith", string("self.startsWith('test')"), 2, 15, 2),
    ("string with endsWith", string("self.endsWith('test')"), 2, 30, 2),
    ("concat string", string('size(self + "hello") > size("hello")'), 314578, 4, 7),
    ("index of array with numbers", array("number", "self[1] == 0.0"), 2, 5000, 2),
    ("index of array with strings", array("string", "self[1] == self[1]"), 314577, 8, 314577),
    ("O(n^2) loop with numbers", array("number", "self.all(x, self.all(y, true))"), None, 10, 352),
    (
        "O(n^3) loop with numbers",
        array("number", "self.all(x, self.all(y, self.all(z, true)))"),
        None,
        10,
        3552,
    ),
    ("regex matches simple", string('self.matches("x")'), 314574, 50, 22),
    ("regex matches empty string", string('"".matches("(((((((((())))))))))[0-9]")'), 7, 10, 7),
    ("regex matches empty regex", string('self.matches("")'), 1, 100, 1),
    ("map of strings with value length", nested_spec("self.all(x, x.contains(self[x]))"), 2752507, 10, 72),
    ("set array maxLength to zero", array("number", "self[3] == 0.0"), 2, 0, 2),
    ("set map maxLength to zero", map_("number", 'self["x"] == 0.0'), 2, 0, 2),
    ("set string maxLength to zero", string('self == "x"'), 2, 0, 1),
    ("set bytes maxLength to zero", bytes_('self == b"x"'), 2, 0, 1),
    (
        "set maxLength greater than estimated maxLength",
        array("number", "self.all(x, x == 0.0)"),
        6291454,
        3 * 1024 * 2048,
        25165826,
    ),
    (
        "nested types with root rule with all supporting maxLength",
        all_max_nested('self.all(x, x["y"].required == "z")'),
        7340027,
        10,
        72,
    ),
    (
        "nested types with root rule with one supporting maxLength",
        one_max_nested('self.all(x, x["y"].required == "z")'),
        7340027,
        10,
        7340027,
    ),
    ("int-or-string array with all", array("int-or-string", "self.all(x, true)"), 4718591, 10, 32),
    ("index of array with int-or-strings", array("int-or-string", "self[0] == 5"), 3, 10, 3),
    ("index of array with booleans", array("boolean", "self[0] == false"), 2, 25, 2),
    ("index of array of objects", object_array("self[0] == null"), 2, 422, 2),
    ("index of array of array of numbers", array_of_arrays("number", "self[0][0] == -1.0"), 3, 51, 3),
    ("array of number maps with all", map_array("number", "self.all(x, x.y == 25.2)"), 6291452, 12, 74),
    ("index of array of number maps", map_array("number", "self[0].x > 2.0"), 4, 3000, 4),
    ("duration array with all", array("duration", "self.all(x, true)"), 2359295, 5, 17),
    ("index of duration array", array("duration", "self[0].getHours() == 2"), 4, 525, 4),
    ("date array with all", array("date", "self.all(x, true)"), 725936, 15, 47),
    ("index of date array", array("date", "self[2].getDayOfMonth() == 13"), 4, 42, 4),
    ("date-time array with all", array("date-time", "self.all(x, true)"), 428963, 25, 77),
    ("index of date-time array", array("date-time", "self[2].getMinutes() == 45"), 4, 99, 4),
    ("map of int-or-strings with all", map_("int-or-string", "self.all(x, true)"), 1348169, 15, 47),
    ("map of objects with all", map_custom(REQ_OBJ, "self.all(x, true)"), 428963, 20, 62),
    (
        "map of number maps with all",
        map_custom({"type": "object", "additionalProperties": {"type": "number"}}, "self.all(x, true)"),
        1179647,
        10,
        32,
    ),
    (
        "map of number arrays with all",
        map_custom({"type": "array", "items": {"type": "number"}}, "self.all(x, true)"),
        1179647,
        25,
        77,
    ),
    ("map of durations with all", map_("duration", "self.all(x, true)"), 1048577, 5, 17),
    ("map of dates with all", map_("date", "self.all(x, true)"), 524288, 10, 32),
    ("map of date-times with all", map_("date-time", "self.all(x, true)"), 349526, 25, 77),
    ("extended library regex find", string("self.find('[0-9]+') == ''"), 629147, 10, 11),
    ("extended library join", join_case, 329853068905, 10, 43),
    ("extended library isSorted", sorted_case, 329854432052, 10, 52),
    ("extended library replace", replace_case, 629154, 4, 12),
    ("extended library split", split_case, 629160, 10, 22),
    ("extended library lowerAscii", lower_case, 314575, 10, 6),
    ("check cost of size call", map_("integer", "oldSelf.size() == self.size()"), 5, 10, 5),
    ("check cost of timestamp comparison", map_("date-time", 'self["a"] == self["b"]'), 8, 7, 8),
    ("check cost of duration comparison", map_("duration", 'self["c"] == self["d"]'), 8, 42, 8),
    (
        "enums with maxLength equals to the longest possible value",
        enum("self.contains('A')", "A", "B", "C", "LongValue"),
        2,
        1000,
        401,
    ),
]


INT_L = "[1, 2, 3, 4, 5]"
UINT_L = "[uint(1), uint(2), uint(3), uint(4), uint(5)]"
DOUBLE_L = "[1.0, 2.0, 3.0, 4.0, 5.0]"
BOOL_L = "[false, true, false, true, false]"
STR_L = "['012345678901', '012345678901', '012345678901', '012345678901', '012345678901']"
BYTES_L = "[bytes('012345678901'), bytes('012345678901'), bytes('012345678901'), bytes('012345678901'), bytes('012345678901')]"
DUR_L = "[duration('1s'), duration('2s'), duration('3s'), duration('4s'), duration('5s')]"
TS_L = (
    "[timestamp('2011-01-01T00:00:00.000+01:00'), timestamp('2011-01-02T00:00:00.000+01:00'), "
    "timestamp('2011-01-03T00:00:00.000+01:00'), timestamp('2011-01-04T00:00:00.000+01:00'), "
    "timestamp('2011-01-05T00:00:00.000+01:00')]"
)
STR50 = "'01234567890123456789012345678901234567890123456789'"
V4, V6 = "ip('192.168.0.1')", "ip('2001:db8:3333:4444:5555:6666:7777:8888')"
C4, C6 = "cidr('192.168.0.0/16')", "cidr('2001:db8::/32')"
URL = "url('https:://kubernetes.io/')"

LIB_CASES: list[tuple[str, int, int]] = [
    # two-variable comprehensions (ext.TwoVarComprehensions, Kubernetes 1.32+)
    ("{'a': 1, 'b': 2}.all(k, v, v > 0)", 37, 41),
    ("{'a': 1, 'b': 2}.exists(k, v, v > 0)", 39, 43),
    ("{'a': 1, 'b': 2}.existsOne(k, v, v > 0)", 38, 40),
    ("{'a': 1, 'b': 2}.transformMap(k, v, v + 1)", 71, 71),
    ("{'a': 1, 'b': 2}.transformMap(k, v, v < 5, v + 1)", 67, 75),
    ("{'a': 1, 'b': 2}.transformMapEntry(k, v, {k: v + 1})", 131, 131),
    ("{'a': 1, 'b': 2}.transformMapEntry(k, v, v < 5, {k: v + 1})", 67, 135),
    ("[1, 2].all(i, v, v > 0)", 17, 21),
    ("[1, 2].exists(i, v, v > 0)", 19, 23),
    ("[1, 2].existsOne(i, v, v > 0)", 18, 20),
    ("[1, 2].transformList(i, v, v + 1)", 49, 49),
    ("[1, 2].transformList(i, v, v < 5, v + 1)", 27, 53),
    *[(f'semver("1.2.3").{f}()', 2, 2) for f in ("major", "minor", "patch")],
    *[(f'semver("1.0.0").{f}(semver("1.1.0"))', 3, 3) for f in ("isLessThan", "isGreaterThan", "compareTo")],
    *[
        (INT_L + ".sum()", 15, 15),
        (UINT_L + ".sum()", 20, 20),
        (DOUBLE_L + ".sum()", 15, 15),
        (DUR_L + ".sum()", 20, 20),
    ],
    *[
        (lit + op, lo, hi)
        for op in (".isSorted()", ".max()", ".min()")
        for lit, lo, hi in (
            (INT_L, 15, 15),
            (UINT_L, 20, 20),
            (DOUBLE_L, 15, 15),
            (BOOL_L, 15, 15),
            (STR_L, 15, 25),
            (BYTES_L, 25, 35),
            (DUR_L, 20, 20),
            (TS_L, 20, 20),
        )
    ],
    *[
        (lit + op % param, lo, hi)
        for op in (".indexOf(%s)", ".lastIndexOf(%s)")
        for lit, param, lo, hi in (
            (INT_L, "3", 15, 15),
            (UINT_L, "uint(3)", 21, 21),
            (DOUBLE_L, "3.0", 15, 15),
            (BOOL_L, "true", 15, 15),
            (STR_L, "'x'", 15, 25),
            (BYTES_L, "bytes('x')", 26, 36),
            (DUR_L, "duration('3s')", 21, 21),
            (TS_L, "timestamp('2011-01-03T00:00:00.000+01:00')", 21, 21),
            (STR50, "'123'", 5, 5),
        )
    ],
    *[
        (URL + op, 4, 4)
        for op in (
            ".getScheme()",
            ".getHostname()",
            ".getHost()",
            ".getPort()",
            ".getEscapedPath()",
            ".getQuery()",
        )
    ],
    (URL + " == url('https:://kubernetes.io/')", 7, 9),
    (URL + " == url('http://x.b')", 5, 5),
    (V4, 2, 2),
    (V6, 4, 4),
    *[
        (ip + op, base + 1, base + 1)
        for ip, base in ((V4, 2), (V6, 4))
        for op in (
            ".family()",
            ".isUnspecified()",
            ".isLoopback()",
            ".isLinkLocalMulticast()",
            ".isLinkLocalUnicast()",
            ".isGlobalUnicast()",
        )
    ],
    (V4 + " == ip('192.168.0.1')", 5, 5),
    (V6 + " == ip('192.168.0.1')", 7, 7),
    ("ip.isCanonical('192.168.0.1')", 3, 3),
    ("ip.isCanonical('2001:db8:3333:4444:5555:6666:7777:8888')", 8, 8),
    ("ip.isCanonical('2001:db8::abcd')", 3, 3),
    (C4, 2, 2),
    (C6, 2, 2),
    *[(c + op, 3, 3) for c in (C4, C6) for op in (".ip()", ".prefixLength()", ".masked()")],
    (C4 + " == cidr('2001:db8::/32')", 5, 5),
    (C6 + " == cidr('2001:db8::/32')", 5, 5),
    *[
        (C4 + op, 2 + lo, 2 + hi)
        for op, lo, hi in (
            (".containsCIDR(cidr('192.0.0.0/30'))", 5, 9),
            (".containsCIDR(cidr('192.168.0.0/16'))", 5, 9),
            (".containsCIDR('192.0.0.0/30')", 5, 9),
            (".containsCIDR('192.168.0.0/16')", 5, 9),
            (".containsIP(ip('192.0.0.1'))", 2, 5),
            (".containsIP(ip('192.169.0.1'))", 3, 6),
            (".containsIP(ip('192.169.169.250'))", 3, 6),
            (".containsIP('192.0.0.1')", 2, 5),
            (".containsIP('192.169.0.1')", 3, 6),
        )
    ],
    *[
        (C6 + op, 2 + lo, 2 + hi)
        for op, lo, hi in (
            (".containsCIDR(cidr('2001:db8::/126'))", 5, 9),
            (".containsCIDR(cidr('2001:db8::/32'))", 5, 9),
            (".containsCIDR('2001:db8::/126')", 5, 9),
            (".containsCIDR('2001:db8::/32')", 5, 9),
            (".containsIP(ip('2001:db8:3333:4444:5555:6666:7777:8888'))", 5, 8),
            (".containsIP(ip('2001:db8::1'))", 3, 6),
            (".containsIP('2001:db8:3333:4444:5555:6666:7777:8888')", 5, 8),
            (".containsIP('2001:db8::1')", 3, 6),
        )
    ],
    ("'ABCDEFGHIJ abcdefghij'.lowerAscii()", 3, 3),
    ("'ABCDEFGHIJ abcdefghij'.lowerAscii() == 'abcdefghij ABCDEFGHIJ'.lowerAscii()", 7, 9),
    ("'ABCDEFGHIJ abcdefghij'.upperAscii()", 3, 3),
    ("'ABCDEFGHIJ abcdefghij'.upperAscii() == 'abcdefghij ABCDEFGHIJ'.upperAscii()", 7, 9),
    ("strings.quote('ABCDEFGHIJ abcdefghij')", 3, 3),
    ("strings.quote('ABCDEFGHIJ abcdefghij') == strings.quote('ABCDEFGHIJ abcdefghij')", 7, 11),
    ("'abc 123 def 123'.replace('123', '456')", 3, 3),
    ("'abc 123 def 123'.replace('', 'x')", 3, 3),
    ("'abc 123 def 123'.replace('123', '')", 3, 3),
    ("'abc 123 def 123'.replace('123', '456', 1)", 3, 3),
    ("'abc 123 def 123'.split(' ')", 3, 3),
    ("'abc 123 def 123'.split(' ', 1)", 3, 3),
    ("'abc 123 def 123'.substring(5)", 2, 2),
    ("'abc 123 def 123'.substring(5, 8)", 2, 2),
    ("'  abc 123 def 123  '.trim()", 2, 2),
    ("['aa', 'bb', 'cc', 'd', 'e', 'f', 'g', 'h', 'i', 'j'].join(' ')", 11, 23),
    ("['aa', 'bb', 'cc', 'd', 'e', 'f', 'g', 'h', 'i', 'j'].join()", 10, 22),
    ("'abc 123 def 123'.find('123')", 2, 2),
    ("'abc 123 def 123'.findAll('123')", 2, 2),
    ("'abc 123 def 123'.findAll('123', 1)", 2, 2),
    ("jsonpatch.escapeKey('abc/def~ abc/def~')", 2, 2),
    ('quantity("12Mi")', 1, 1),
    ('isQuantity("20")', 1, 1),
    ('isQuantity("20M")', 1, 1),
    ('quantity("200M") == quantity("200M")', 3, 3),
    ('quantity("200M") == quantity("0.2G") && quantity("0.2G") == quantity("200M")', 3, 6),
    (
        'quantity("2M") == quantity("0.002G") && quantity("2000k") == quantity("2M") && quantity("0.002G") == quantity("2000k")',
        3,
        9,
    ),
    ('quantity("50M").isLessThan(quantity("50Mi"))', 3, 3),
    ('quantity("50Mi").isGreaterThan(quantity("50M"))', 3, 3),
    ('quantity("200M").compareTo(quantity("0.2G")) > 0', 4, 4),
    ('quantity("50k").add(quantity("20")) == quantity("50.02k")', 5, 5),
    ('quantity("50k").sub(quantity("20")) == quantity("49.98k")', 5, 5),
    ('quantity("50k").sub(20) == quantity("49980")', 4, 4),
    ('quantity("50k").add(20).sub(quantity("100k")).asInteger() > 0', 6, 6),
    ('quantity("50k").add(20).sub(quantity("100k")).sub(-50000).asInteger() > 0', 7, 7),
    ('quantity("50k").asInteger() > 0', 3, 3),
    ('quantity("50").isInteger()', 2, 2),
    ('quantity("50.703k").asApproximateFloat() > 0.0', 3, 3),
    ('format.named("dns1123subdomain")', 1, 1),
    ('format.named("dns1123Subdomain").value().validate("my-name")', 34, 34),
    ('format.named("dns1123Label").value().validate("my-name")', 34, 34),
]
