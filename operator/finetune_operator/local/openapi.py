"""The emulated kube-apiserver's OpenAPI v3 discovery (``/openapi/v3`` and one document per group-version).

Only what clients read from it: every served resource's paths and operations, each tagged with
``x-kubernetes-group-version-kind`` and listing the query parameters the emulator honours
(``fieldValidation``, ``fieldManager``, ``dryRun``). kubectl reads this to decide that the server does the
field validation itself, and then sends ``fieldValidation=Strict`` (its default ``--validate=strict``)
instead of validating against downloaded schemas. The installed CRDs' schemas are published as components.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from finetune_operator.local.semantics import ApiError, JsonDict, ResourceDef

_WRITE_PARAMS = ("fieldValidation", "fieldManager", "dryRun", "pretty")


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _param(name: str) -> JsonDict:
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


def _operation(rdef: ResourceDef, action: str, params: Iterable[str]) -> JsonDict:
    return {
        "operationId": f"{action}{rdef.kind}",
        "parameters": [_param(p) for p in params],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rdef.group, "version": rdef.version, "kind": rdef.kind},
    }


def group_version_document(
    group: str, version: str, resources: Iterable[ResourceDef], schemas: Mapping[str, Any]
) -> JsonDict:
    """The OpenAPI v3 document of one group-version."""
    paths: JsonDict = {}
    base = "/" + _prefix(group, version)
    for rdef in resources:
        if rdef.group != group or rdef.version != version:
            continue
        scope = (
            f"{base}/namespaces/{{namespace}}/{rdef.plural}" if rdef.namespaced else f"{base}/{rdef.plural}"
        )
        paths[scope] = {
            "get": _operation(rdef, "list", ("labelSelector", "fieldSelector", "watch", "resourceVersion")),
            "post": _operation(rdef, "post", _WRITE_PARAMS),
        }
        item = {
            "get": _operation(rdef, "get", ()),
            "put": _operation(rdef, "put", _WRITE_PARAMS),
            "patch": _operation(rdef, "patch", (*_WRITE_PARAMS, "force")),
            "delete": _operation(rdef, "delete", ("gracePeriodSeconds", "propagationPolicy", "dryRun")),
        }
        paths[f"{scope}/{{name}}"] = item
        if rdef.status_subresource:
            paths[f"{scope}/{{name}}/status"] = {key: item[key] for key in ("get", "put", "patch")}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (finetune-operator emulator)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": dict(schemas)},
    }


def root_document(group_versions: Iterable[tuple[str, str]], digest: str) -> JsonDict:
    """``/openapi/v3``: where each group-version's document is (the hash changes with the resources)."""
    return {
        "paths": {
            _prefix(group, version): {
                "serverRelativeURL": f"/openapi/v3/{_prefix(group, version)}?hash={digest}"
            }
            for group, version in sorted(set(group_versions))
        }
    }


def crd_schemas(crds: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """(group, version) -> {component name: the CRD version's openAPIV3Schema}."""
    out: dict[str, dict[str, Any]] = {}
    for crd in crds:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = str(spec.get("group", ""))
        for ver in spec.get("versions") or []:
            schema = (ver.get("schema") or {}).get("openAPIV3Schema")
            if schema is not None:
                key = f"{group}/{ver.get('name')}"
                reverse = ".".join(reversed(group.split(".")))
                out.setdefault(key, {})[f"{reverse}.{ver.get('name')}.{names.get('kind')}"] = schema
    return out


def resources_digest(resources: Iterable[ResourceDef]) -> str:
    text = json.dumps(sorted((r.group, r.version, r.plural, r.kind) for r in resources))
    return hashlib.sha256(text.encode()).hexdigest()[:16].upper()


def serve(path: str, resources: list[ResourceDef], crds: list[JsonDict]) -> tuple[int, JsonDict]:
    """(HTTP status, body) of ``/openapi/v3`` or ``/openapi/v3/apis/<group>/<version>`` (``.../api/v1``)."""
    rest = path.rstrip("/").removeprefix("/openapi/v3").strip("/")
    if not rest:
        gvs = [(r.group, r.version) for r in resources]
        return 200, root_document(gvs, resources_digest(resources))
    segs = rest.split("/")
    if segs[0] == "api" and len(segs) == 2:
        group, version = "", segs[1]
    elif segs[0] == "apis" and len(segs) == 3:
        group, version = segs[1], segs[2]
    else:
        return 404, ApiError.no_resource().status()
    if not any(r.group == group and r.version == version for r in resources):
        return 404, ApiError.no_resource().status()
    schemas = crd_schemas(crds).get(f"{group}/{version}", {})
    return 200, group_version_document(group, version, resources, schemas)
