"""Pure helpers of the emulated kube-apiserver: resources, errors, selectors (patches: :mod:`.patching`).

No I/O and no state here; the stateful part is :mod:`finetune_operator.local.store`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

from finetune_operator.local.patching import JsonPatchError, clone, json_patch, merge_patch, merge_patch_into

__all__ = [
    "ALL_VERBS",
    "STATUS_VERBS",
    "ApiError",
    "JsonDict",
    "JsonPatchError",
    "Requirement",
    "ResourceDef",
    "Selector",
    "builtin_resources",
    "clone",
    "field_value",
    "generated_suffix",
    "json_patch",
    "merge_patch",
    "merge_patch_into",
    "now_rfc3339",
    "parse_field_selector",
    "parse_label_selector",
    "parse_rfc3339",
    "resources_from_crd",
    "valid_name",
]

JsonDict = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the real apiserver's alphabet (no vowels)


@dataclasses.dataclass(frozen=True)
class ResourceDef:
    """What the discovery says about one served resource (one group/version/plural)."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    has_generation: bool = True
    initial_status: Mapping[str, Any] | None = None  # status set on create (status-subresource kinds)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> tuple[str, str]:
        """All versions of one group/plural share one storage (as in etcd)."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """The group-qualified name used in the apiserver's messages: ``jobs.batch``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _core(
    plural: str,
    kind: str,
    *,
    group: str = "",
    version: str = "v1",
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    generation: bool = False,
    initial_status: Mapping[str, Any] | None = None,
) -> ResourceDef:
    return ResourceDef(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        status_subresource=status,
        has_generation=generation,
        initial_status=initial_status,
    )


def builtin_resources() -> list[ResourceDef]:
    """The built-in resources the emulator serves (a fresh list on each call)."""
    return [
        _core(
            "pods", "Pod", short=("po",), status=True, generation=True, initial_status={"phase": "Pending"}
        ),
        _core("configmaps", "ConfigMap", short=("cm",)),
        _core("secrets", "Secret"),
        _core("serviceaccounts", "ServiceAccount", short=("sa",)),
        _core("services", "Service", short=("svc",)),
        _core("events", "Event", short=("ev",)),
        _core(
            "namespaces",
            "Namespace",
            namespaced=False,
            short=("ns",),
            status=True,
            initial_status={"phase": "Active"},
        ),
        _core("jobs", "Job", group="batch", status=True, generation=True, initial_status={}),
        _core("roles", "Role", group="rbac.authorization.k8s.io"),
        _core("rolebindings", "RoleBinding", group="rbac.authorization.k8s.io"),
        _core("events", "Event", group="events.k8s.io", short=("ev",)),
        _core("leases", "Lease", group="coordination.k8s.io"),
        _core(
            "customresourcedefinitions",
            "CustomResourceDefinition",
            group="apiextensions.k8s.io",
            version="v1",
            namespaced=False,
            short=("crd", "crds"),
            status=True,
            generation=True,
            initial_status={},
        ),
    ]


def resources_from_crd(crd: Mapping[str, Any]) -> list[ResourceDef]:
    """One :class:`ResourceDef` per served version of a CRD manifest."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result: list[ResourceDef] = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subresources = ver.get("subresources") or spec.get("subresources") or {}
        has_status = "status" in subresources
        result.append(
            ResourceDef(
                group=spec["group"],
                version=ver["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource=has_status,
                has_generation=True,
                initial_status={} if has_status else None,
            )
        )
    return result


class ApiError(Exception):
    """An error answered as a ``kind: Status`` body, as the real apiserver does."""

    def __init__(self, code: int, reason: str, message: str, details: JsonDict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JsonDict:
        body: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, rdef: ResourceDef, name: str) -> ApiError:
        return cls(404, "NotFound", f'{rdef.qualified} "{name}" not found', _details(rdef, name))

    @classmethod
    def already_exists(cls, rdef: ResourceDef, name: str) -> ApiError:
        return cls(409, "AlreadyExists", f'{rdef.qualified} "{name}" already exists', _details(rdef, name))

    @classmethod
    def conflict(cls, rdef: ResourceDef, name: str, why: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rdef.qualified} "{name}": {why}',
            _details(rdef, name),
        )

    @classmethod
    def invalid(cls, rdef: ResourceDef, name: str, why: str) -> ApiError:
        kind = f"{rdef.kind}.{rdef.group}" if rdef.group else rdef.kind
        details = {"name": name, "group": rdef.group, "kind": rdef.kind, "causes": [{"message": why}]}
        return cls(422, "Invalid", f'{kind} "{name}" is invalid: {why}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def no_resource(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource")


def _details(rdef: ResourceDef, name: str) -> JsonDict:
    return {"name": name, "group": rdef.group, "kind": rdef.plural}


def now_rfc3339(now: datetime.datetime | None = None) -> str:
    moment = now or datetime.datetime.now(tz=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def valid_name(name: str) -> bool:
    return len(name) <= 253 and bool(_NAME_RE.match(name))


def generated_suffix(rnd: Any, length: int = 5) -> str:
    return "".join(rnd.choice(_GENERATE_ALPHABET) for _ in range(length))


# --- selectors ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # '=', '!=', 'in', 'notin', 'exists', '!exists'
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # '!=' and 'notin' match objects without the label too (as in the real apiserver).
        return self.key not in labels or labels[self.key] not in self.values


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_SET_RE = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_RE = re.compile(r"^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_KEY_RE = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    result: list[Requirement] = []
    for part in _split_top(text):
        if match := _SET_RE.match(part):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            result.append(Requirement(match.group(1), match.group(2), values))
        elif match := _EQ_RE.match(part):
            op = "!=" if match.group(2) == "!=" else "="
            result.append(Requirement(match.group(1), op, frozenset({match.group(3)})))
        elif match := _KEY_RE.match(part):
            result.append(Requirement(match.group(2), "!exists" if match.group(1) else "exists"))
        else:
            raise ApiError.bad_request(f"unable to parse requirement: {part!r}")
    return result


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """``metadata.name=x,status.phase!=Running`` -> [(path, op, value)]; any dotted path is allowed."""
    if not text:
        return []
    result: list[tuple[str, str, str]] = []
    for part in _split_top(text):
        match = _EQ_RE.match(part)
        if not match:
            raise ApiError.bad_request(f"invalid field selector: {part!r}")
        op = "!=" if match.group(2) == "!=" else "="
        result.append((match.group(1), op, match.group(3)))
    return result


def field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Selector:
    namespace: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def parse(cls, namespace: str | None, label_selector: str | None, field_selector: str | None) -> Selector:
        return cls(
            namespace,
            tuple(parse_label_selector(label_selector)),
            tuple(parse_field_selector(field_selector)),
        )

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(req.matches(labels) for req in self.labels):
            return False
        for path, op, value in self.fields:
            actual = field_value(obj, path)
            if (actual == value) != (op == "="):
                return False
        return True
