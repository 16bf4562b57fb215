"""The emulated kube-apiserver's object store: writes (create, update, patch) with admission on top of
:mod:`finetune_operator.local.storecore` (objects, reads, watches, commits) and
:mod:`finetune_operator.local.deletion` (deletion, binding, eviction).

Every operation is synchronous (atomic on the event loop), like one etcd transaction.
Both the HTTP front (:mod:`finetune_operator.local.emulator`) and the in-process helpers call these.
"""

from __future__ import annotations

import builtins
import datetime
import uuid
from collections.abc import Iterable
from typing import Any

from finetune_operator.local.admission import (
    CRD_GROUP,
    DEFAULT_FIELD_VALIDATION,
    admit_crd,
    admit_custom_resource,
    crd_established_status,
    is_crd,
)
from finetune_operator.local.deletion import Deletions
from finetune_operator.local.semantics import (
    ApiError,
    JsonDict,
    JsonPatchError,
    ResourceDef,
    builtin_resources,
    clone,
    generated_suffix,
    json_patch,
    merge_patch_into,
    now_rfc3339,
    parse_rfc3339,
    resources_from_crd,
    valid_name,
)
from finetune_operator.local.storecore import HistoryRecord

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
    "HistoryRecord",
    "ObjectStore",
    "age_seconds",
]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


class ObjectStore(Deletions):
    def __init__(
        self,
        *,
        crds: Iterable[JsonDict] = (),
        watch_cache_size: int = 10_000,
        auto_namespaces: bool = True,
        keep_history: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            watch_cache_size=watch_cache_size,
            auto_namespaces=auto_namespaces,
            keep_history=keep_history,
            seed=seed,
        )
        for rdef in builtin_resources():
            self.register(rdef)
        for name in ("default", "kube-system"):
            self.create(self.resolve("", "v1", "namespaces"), None, {"metadata": {"name": name}})
        for crd in crds:
            self.create(self.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, crd)

    # --- writing -------------------------------------------------------------------------------

    def _ensure_namespace(self, namespace: str) -> None:
        nsdef = self.resolve("", "v1", "namespaces")
        if (("", namespace)) in self._objects[nsdef.storage_key]:
            return
        if not self.auto_namespaces:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        self.create(nsdef, None, {"metadata": {"name": namespace}})

    def create(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        body: Any,
        *,
        field_validation: str = DEFAULT_FIELD_VALIDATION,
        warnings: builtins.list[str] | None = None,
    ) -> JsonDict:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request was not a JSON object")
        obj = clone(body)
        meta = obj.setdefault("metadata", {})
        if rdef.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                raise ApiError.no_resource()
            if body_ns and body_ns != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            self._ensure_namespace(namespace)
        else:
            meta.pop("namespace", None)
        objs = self._objects[rdef.storage_key]
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(100):
                candidate = f"{meta['generateName']}{generated_suffix(self._random)}"
                if (meta.get("namespace") or "", candidate) not in objs:
                    meta["name"] = candidate
                    break
        name = meta.get("name")
        if not name:
            raise ApiError.invalid(
                rdef, "", "metadata.name: Required value: name or generateName is required"
            )
        if not isinstance(name, str) or not valid_name(name):
            raise ApiError.invalid(
                rdef,
                str(name),
                f"metadata.name: Invalid value: {name!r}: "
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'",
            )
        if (meta.get("namespace") or "", name) in objs:
            raise ApiError.already_exists(rdef, name)
        for field in (*_SERVER_META, "resourceVersion"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rdef.has_generation:
            meta["generation"] = 1
        obj["apiVersion"] = rdef.api_version
        obj["kind"] = rdef.kind
        if rdef.status_subresource:
            obj.pop("status", None)
            if rdef.initial_status:
                obj["status"] = clone(dict(rdef.initial_status))
        obj = self._admit(rdef, obj, None, None, field_validation, warnings)
        if is_crd(rdef):  # served at once: the apiextensions controllers' conditions, already True
            obj["status"] = crd_established_status(obj)
        result = self._commit("create", "ADDED", rdef, obj, None)
        if is_crd(rdef) and not self.dry_run_active:
            for crd_def in resources_from_crd(obj):
                self.register(crd_def)
        return result

    def replace(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
        *,
        verb: str = "update",
        field_validation: str = DEFAULT_FIELD_VALIDATION,
        warnings: builtins.list[str] | None = None,
    ) -> JsonDict:
        return self._replace(
            rdef,
            namespace,
            name,
            body,
            subresource,
            verb=verb,
            fresh=False,
            field_validation=field_validation,
            warnings=warnings,
        )

    def _replace(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None,
        *,
        verb: str,
        fresh: bool,
        field_validation: str = DEFAULT_FIELD_VALIDATION,
        warnings: builtins.list[str] | None = None,
    ) -> JsonDict:
        """``fresh``: ``body`` is a private copy that may become the stored object (no copy made)."""
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request was not a JSON object")
        old = self._objects[rdef.storage_key].get((namespace or "", name))
        if old is None:
            raise ApiError.not_found(rdef, name)
        body_name = (body.get("metadata") or {}).get("name")
        if body_name is not None and body_name != name:
            raise ApiError.bad_request("the name of the object does not match the name on the URL")
        body_ns = (body.get("metadata") or {}).get("namespace")
        if rdef.namespaced and body_ns and body_ns != namespace:
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        new_rv = (body.get("metadata") or {}).get("resourceVersion")
        old_meta = old["metadata"]
        if new_rv not in (None, "") and str(new_rv) != old_meta["resourceVersion"]:
            raise ApiError.conflict(
                rdef,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if subresource == "status":
            if not rdef.status_subresource:
                raise ApiError.no_resource()
            new = clone(old)
            if "status" in body:
                new["status"] = body["status"] if fresh else clone(body["status"])
            else:
                new.pop("status", None)
            new = self._admit(rdef, new, old, "status", field_validation, warnings)
        elif subresource is None:
            new = body if fresh else clone(body)
            meta = new.setdefault("metadata", {})
            meta["name"] = name
            if rdef.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            for field in _SERVER_META:
                if field in old_meta:
                    meta[field] = clone(old_meta[field])
                else:
                    meta.pop(field, None)
            new["apiVersion"] = rdef.api_version
            new["kind"] = rdef.kind
            if rdef.status_subresource:
                if "status" in old:
                    new["status"] = clone(old["status"])
                else:
                    new.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise ApiError.invalid(
                        rdef,
                        name,
                        "metadata.finalizers: Forbidden: no new finalizers "
                        "can be added if the object is being deleted",
                    )
            new = self._admit(rdef, new, old, None, field_validation, warnings)
            if rdef.has_generation and _spec_of(new, rdef) != _spec_of(old, rdef):
                new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        else:
            raise ApiError.no_resource()
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if new == old:  # a no-op write: no new resourceVersion, no event (as in the real apiserver)
            return self._out(rdef, old)
        # the replaced object leaves the store here: the event may keep it without a copy
        result = self._commit(verb, "MODIFIED", rdef, new, old, subresource=subresource)
        if (
            new["metadata"].get("deletionTimestamp")
            and not new["metadata"].get("finalizers")
            and not new["metadata"].get("deletionGracePeriodSeconds")
        ):  # the last finalizer is gone and no kubelet waits on it (ShouldDeleteDuringUpdate)
            self._commit("delete", "DELETED", rdef, clone(new), clone(new))
        return result

    def patch(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
        field_validation: str = DEFAULT_FIELD_VALIDATION,
        warnings: builtins.list[str] | None = None,
    ) -> JsonDict:
        old = self._objects[rdef.storage_key].get((namespace or "", name))
        if old is None:
            raise ApiError.not_found(rdef, name)
        content_type = content_type.split(";", maxsplit=1)[0].strip().lower()
        current = self._out(rdef, old)
        if content_type in (MERGE_PATCH, STRATEGIC_PATCH):
            if not isinstance(patch, dict):
                raise ApiError.bad_request("the body of the request was not a JSON object")
            new = merge_patch_into(current, patch)  # current is a private copy
        elif content_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise ApiError.bad_request("the JSON patch must be a list of operations")
            try:
                new = json_patch(current, patch)
            except JsonPatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format "
                f"- accepted media types include: {MERGE_PATCH}, {JSON_PATCH}, {STRATEGIC_PATCH}",
            )
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        return self._replace(
            rdef,
            namespace,
            name,
            new,
            subresource,
            verb="patch",
            fresh=True,
            field_validation=field_validation,
            warnings=warnings,
        )

    def crd_of(self, rdef: ResourceDef) -> JsonDict | None:
        """The installed CustomResourceDefinition that serves ``rdef`` (None for built-in resources)."""
        crds = self._objects.get((CRD_GROUP, "customresourcedefinitions"), {})
        return crds.get(("", f"{rdef.plural}.{rdef.group}")) if rdef.group else None

    def _admit(
        self,
        rdef: ResourceDef,
        obj: JsonDict,
        old: JsonDict | None,
        subresource: str | None,
        mode: str,
        warnings: builtins.list[str] | None,
    ) -> JsonDict:
        """The object as the server would store it: CRDs cost-checked, custom resources validated."""
        if is_crd(rdef):
            admit_crd(rdef, obj, old)
            return obj
        crd = self.crd_of(rdef)
        if crd is None:
            return obj
        return admit_custom_resource(
            crd, rdef, obj, old=old, mode=mode, subresource=subresource, warnings=warnings
        )


def _spec_of(obj: JsonDict, rdef: ResourceDef) -> JsonDict:
    """Everything that bumps metadata.generation: all but metadata (and status if a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rdef.status_subresource else set())
    return {key: value for key, value in obj.items() if key not in skip}


def age_seconds(timestamp: str, now: datetime.datetime | None = None) -> float:
    moment = now or datetime.datetime.now(tz=datetime.UTC)
    return (moment - parse_rfc3339(timestamp)).total_seconds()
