"""Copies and patches of API data (pure): a fast deep copy, RFC 7386 JSON merge patch, RFC 6902 JSON patch."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

JsonDict = dict[str, Any]


def clone(value: Any) -> Any:
    """A deep copy of API data, the same as :func:`copy.deepcopy` (types and shared parts kept), made by
    a pickle round trip: several times faster for the nested dicts and lists of API objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))  # our own bytes
    except Exception:  # not picklable: copy.deepcopy knows more ways
        return copy.deepcopy(value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value, never mutates the inputs)."""
    if not isinstance(patch, dict):
        return clone(patch)
    return merge_patch_into(clone(target) if isinstance(target, dict) else {}, patch)


def merge_patch_into(target: JsonDict, patch: JsonDict) -> JsonDict:
    """:func:`merge_patch` of a dict ``patch`` that updates ``target`` in place (a private copy) and
    returns it; ``patch`` is never mutated nor shared."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = merge_patch_into(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = clone(value)
    return target


class JsonPatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent = _parent(doc, tokens)
    last = tokens[-1] if tokens else ""
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise JsonPatchError(f"path not found for removal: /{'/'.join(tokens)}")


def _add(doc: Any, tokens: list[str], value: Any, *, replace: bool = False) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise JsonPatchError(f"path not found for replacement: /{'/'.join(tokens)}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise JsonPatchError(f"array index out of range: /{'/'.join(tokens)}")
    else:
        raise JsonPatchError(f"cannot add to a scalar at /{'/'.join(tokens)}")
    return doc


def json_patch(target: Any, operations: Iterable[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(target)
    for op in operations:
        kind = op.get("op")
        tokens = _pointer(str(op.get("path", "")))
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            value = _remove(doc, _pointer(str(op.get("from", ""))))
            doc = _add(doc, tokens, value)
        elif kind == "copy":
            value = copy.deepcopy(_get(doc, _pointer(str(op.get("from", "")))))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            actual = _get(doc, tokens)
            if actual != op.get("value"):
                raise JsonPatchError(
                    f"testing value {op.get('path')} failed: {actual!r} != {op.get('value')!r}"
                )
        else:
            raise JsonPatchError(f"unknown JSON patch operation: {kind!r}")
    return doc
