"""The stateful core of the emulated kube-apiserver: objects, resourceVersions, history, watches.

Every operation is synchronous (atomic on the event loop), like one etcd transaction.
Both the HTTP front (:mod:`finetune_operator.local.emulator`) and the in-process helpers call these.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import datetime
import pickle
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from finetune_operator.local.admission import (
    CRD_GROUP,
    DEFAULT_FIELD_VALIDATION,
    admit_crd,
    admit_custom_resource,
    is_crd,
)
from finetune_operator.local.pods import bind as bind_pod
from finetune_operator.local.pods import (
    deletion_timestamp,
    disruption_condition,
    eviction_delete_options,
    eviction_success,
    grace_period,
    is_pod,
    is_terminal,
    set_condition,
)
from finetune_operator.local.semantics import (
    ApiError,
    JsonDict,
    JsonPatchError,
    ResourceDef,
    Selector,
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
from finetune_operator.local.watching import Watcher, WatchEvent

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


@dataclasses.dataclass(frozen=True)
class HistoryRecord:
    """One committed write, in commit order (``object`` is a deep copy: do not mutate it)."""

    verb: str  # create | update | patch | delete
    event: str  # ADDED | MODIFIED | DELETED
    group: str
    plural: str
    namespace: str | None
    name: str
    resource_version: str
    object: JsonDict
    timestamp: float  # time.monotonic()
    subresource: str | None = None


class ObjectStore:
    def __init__(
        self,
        *,
        crds: Iterable[JsonDict] = (),
        watch_cache_size: int = 10_000,
        auto_namespaces: bool = True,
        keep_history: bool = True,
        seed: int | None = None,
    ) -> None:
        self.keep_history = keep_history
        self._defs: dict[tuple[str, str, str], ResourceDef] = {}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], JsonDict]] = {}
        self._uids: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {}
        # owner uid -> its dependents (storage key, object key), in the order their references appeared:
        # the garbage collector and the Job controller find dependents without scanning every object
        self._dependents: dict[str, dict[tuple[tuple[str, str], tuple[str, str]], None]] = {}
        self._by_name: dict[str, ResourceDef] = {}  # find()'s answers
        self._rv = 0
        self._cache: collections.deque[WatchEvent] = collections.deque(maxlen=watch_cache_size)
        self._watchers: set[Watcher] = set()
        self._random = random.Random(seed)
        self.auto_namespaces = auto_namespaces
        self.history: builtins.list[HistoryRecord] = []
        self.on_register: builtins.list[Callable[[ResourceDef], None]] = []
        self.on_unregister: builtins.list[Callable[[ResourceDef], None]] = []
        for rdef in builtin_resources():
            self.register(rdef)
        for name in ("default", "kube-system"):
            self.create(self.resolve("", "v1", "namespaces"), None, {"metadata": {"name": name}})
        for crd in crds:
            self.create(self.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, crd)

    # --- resources -----------------------------------------------------------------------------

    def register(self, rdef: ResourceDef) -> None:
        self._defs[(rdef.group, rdef.version, rdef.plural)] = rdef
        self._by_name.clear()
        self._objects.setdefault(rdef.storage_key, {})
        for callback in self.on_register:
            callback(rdef)

    @property
    def resources(self) -> builtins.list[ResourceDef]:
        return list(self._defs.values())

    def resolve(self, group: str, version: str, plural: str) -> ResourceDef:
        try:
            return self._defs[(group, version, plural)]
        except KeyError:
            raise ApiError.no_resource() from None

    def find(self, resource: str) -> ResourceDef:
        """By ``plural`` (the core group wins), ``plural.group`` or ``apiVersion/Kind``."""
        known = self._by_name.get(resource)
        if known is not None:
            return known
        found = self._find(resource)
        self._by_name[resource] = found
        return found

    def _find(self, resource: str) -> ResourceDef:
        for rdef in self._defs.values():
            if resource in (rdef.plural, rdef.qualified) and rdef.group == "":
                return rdef
        for rdef in self._defs.values():
            if resource in (rdef.plural, rdef.qualified, f"{rdef.api_version}/{rdef.kind}"):
                return rdef
        raise ApiError.no_resource()

    def for_kind(self, api_version: str, kind: str) -> ResourceDef:
        if not api_version or not kind:
            raise ApiError.no_resource()
        return self.find(f"{api_version}/{kind}")

    # --- reading -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, resource: str | ResourceDef, namespace: str | None, name: str) -> JsonDict | None:
        """A deep copy of the current object, or None (test accessor; no errors)."""
        rdef = resource if isinstance(resource, ResourceDef) else self.find(resource)
        obj = self._objects[rdef.storage_key].get((namespace or "", name))
        return self._out(rdef, obj) if obj is not None else None

    def list(
        self,
        resource: str | ResourceDef,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[JsonDict]:
        rdef = resource if isinstance(resource, ResourceDef) else self.find(resource)
        selector = Selector.parse(namespace, label_selector, field_selector)
        return [self._out(rdef, obj) for obj in self._sorted(rdef) if selector.matches(obj)]

    def by_uid(self, uid: str) -> JsonDict | None:
        where = self._uids.get(uid)
        return clone(self._objects[where[0]][where[1]]) if where else None

    def has_uid(self, uid: str) -> bool:
        """Whether an object with that uid exists (no copy)."""
        return uid in self._uids

    def dependents(self, owner_uid: str, rdef: ResourceDef | None = None) -> builtins.list[JsonDict]:
        """Deep copies of the objects whose ownerReferences name ``owner_uid`` (of ``rdef`` only if
        given): by resource as in :meth:`all_objects`, then in the order their references appeared."""
        order = {skey: i for i, skey in enumerate(self._objects)}
        found = [
            where
            for where in self._dependents.get(owner_uid, {})
            if rdef is None or where[0] == rdef.storage_key
        ]
        found.sort(key=lambda where: order[where[0]])  # stable: reference order within a resource
        result = []
        for skey, key in found:
            obj = self._objects[skey][key]
            result.append(self._out(rdef, obj) if rdef is not None else clone(obj))
        return result

    def all_objects(self) -> builtins.list[JsonDict]:
        return [clone(obj) for objs in self._objects.values() for obj in objs.values()]

    def fetch(self, rdef: ResourceDef, namespace: str | None, name: str) -> JsonDict:
        obj = self._objects[rdef.storage_key].get((namespace or "", name))
        if obj is None:
            raise ApiError.not_found(rdef, name)
        return self._out(rdef, obj)

    def list_collection(
        self, rdef: ResourceDef, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> JsonDict:
        return {
            "kind": f"{rdef.kind}List",
            "apiVersion": rdef.api_version,
            "metadata": {"resourceVersion": self.resource_version},
            "items": self.list(rdef, namespace, label_selector, field_selector),
        }

    def _sorted(self, rdef: ResourceDef) -> builtins.list[JsonDict]:
        objs = self._objects[rdef.storage_key]
        return [objs[key] for key in sorted(objs)]

    @staticmethod
    def _out(rdef: ResourceDef, obj: JsonDict) -> JsonDict:
        result: JsonDict = clone(obj)
        result["apiVersion"] = rdef.api_version
        return result

    # --- watching ------------------------------------------------------------------------------

    def watch(self, rdef: ResourceDef | None, selector: Selector, resource_version: str | None) -> Watcher:
        """Register a watcher; replay history after ``resource_version`` (or the current state)."""
        watcher = Watcher(rdef.storage_key if rdef else None, selector)
        if rdef is not None and resource_version in (None, "", "0"):
            for obj in self._sorted(rdef):
                if selector.matches(obj):
                    watcher.queue.put_nowait({"type": "ADDED", "object": self._out(rdef, obj)})
        elif resource_version not in (None, "", "0"):
            try:
                since = int(str(resource_version))
            except ValueError:
                raise ApiError.bad_request(f"invalid resource version: {resource_version!r}") from None
            oldest = self._cache[0].rv if self._cache else self._rv + 1
            if since < oldest - 1 and since < self._rv:
                watcher.queue.put_nowait(
                    {
                        "type": "ERROR",
                        "object": ApiError(
                            410, "Expired", f"too old resource version: {since} ({oldest - 1})"
                        ).status(),
                    }
                )
                watcher.close()
                return watcher
            for event in self._cache:
                if event.rv > since:
                    watcher.offer(event)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.close()

    def close_watchers(self) -> None:
        for watcher in list(self._watchers):
            self.unwatch(watcher)

    # --- writing -------------------------------------------------------------------------------

    def _commit(
        self,
        verb: str,
        kind: str,
        rdef: ResourceDef,
        obj: JsonDict,
        old: JsonDict | None,
        *,
        subresource: str | None = None,
        propagation: str | None = None,
    ) -> JsonDict:
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace") or "", meta["name"])
        where = (rdef.storage_key, key)
        previous = self._objects[rdef.storage_key].get(key)
        before = _owner_uids(previous) if previous is not None else set()
        if kind == "DELETED":
            self._objects[rdef.storage_key].pop(key, None)
            self._uids.pop(meta.get("uid", ""), None)
            after: set[str] = set()
        else:
            self._objects[rdef.storage_key][key] = obj
            self._uids[meta["uid"]] = where
            after = _owner_uids(obj)
        for owner in before - after:
            dependents = self._dependents.get(owner)
            if dependents is not None:
                dependents.pop(where, None)
                if not dependents:
                    del self._dependents[owner]
        for owner in after - before:
            self._dependents.setdefault(owner, {})[where] = None
        obj_out = {**obj, "apiVersion": rdef.api_version}
        data = pickle.dumps(obj_out, pickle.HIGHEST_PROTOCOL)
        snapshot: JsonDict = pickle.loads(data)  # our own bytes
        if self.keep_history:
            self.history.append(
                HistoryRecord(
                    verb=verb,
                    event=kind,
                    group=rdef.group,
                    plural=rdef.plural,
                    namespace=meta.get("namespace"),
                    name=meta["name"],
                    resource_version=str(self._rv),
                    object=snapshot,
                    timestamp=time.monotonic(),
                    subresource=subresource,
                )
            )
        event = WatchEvent(self._rv, rdef.storage_key, kind, snapshot, old, propagation)
        self._cache.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)
        returned: JsonDict = pickle.loads(data)
        return returned

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
        result = self._commit("create", "ADDED", rdef, obj, None)
        if rdef.group == "apiextensions.k8s.io" and rdef.plural == "customresourcedefinitions":
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

    def delete(
        self, rdef: ResourceDef, namespace: str | None, name: str, options: JsonDict | None = None
    ) -> tuple[JsonDict, bool]:
        """Returns the object and whether it is gone now (False: marked for deletion only)."""
        options = options or {}
        old = self._objects[rdef.storage_key].get((namespace or "", name))
        if old is None:
            raise ApiError.not_found(rdef, name)
        meta = old["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError.conflict(
                rdef,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]:
            raise ApiError.conflict(
                rdef,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        period = grace_period(rdef, old, options)
        policy = options.get("propagationPolicy")
        finalizers = bool(meta.get("finalizers"))
        if meta.get("deletionTimestamp"):
            current = meta.get("deletionGracePeriodSeconds") or 0
            if period >= current:  # a deletion in progress is never lengthened
                return self._out(rdef, old), False
            new = clone(old)
            new["metadata"]["deletionTimestamp"] = deletion_timestamp(period)
            new["metadata"]["deletionGracePeriodSeconds"] = period
            if period == 0 and not finalizers:
                return self._delete_now(rdef, new, old, policy), True
            return self._commit("delete", "MODIFIED", rdef, new, clone(old)), False
        if finalizers or period > 0:  # graceful deletion and finalizers: deletionTimestamp first
            new = clone(old)
            new["metadata"]["deletionTimestamp"] = deletion_timestamp(period)
            new["metadata"]["deletionGracePeriodSeconds"] = period
            if rdef.has_generation:
                new["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            return self._commit("delete", "MODIFIED", rdef, new, clone(old)), False
        return self._delete_now(rdef, clone(old), old, policy), True

    def _delete_now(self, rdef: ResourceDef, obj: JsonDict, old: JsonDict, policy: Any) -> JsonDict:
        if is_crd(rdef):
            old = self._terminate_crd(rdef, old)
            obj = clone(old)
        return self._commit(
            "delete", "DELETED", rdef, obj, clone(old), propagation=str(policy) if policy else None
        )

    def _terminate_crd(self, rdef: ResourceDef, crd: JsonDict) -> JsonDict:
        """A CRD's deletion as the real server does it: deletionTimestamp and a `Terminating` condition
        first (its `customresourcecleanup.apiextensions.k8s.io` finalizer holds it), then its custom
        resources are deleted and its endpoints removed; the CRD itself goes last."""
        terminating = clone(crd)
        meta = terminating["metadata"]
        meta.setdefault("deletionTimestamp", deletion_timestamp(0))
        meta["finalizers"] = ["customresourcecleanup.apiextensions.k8s.io"]
        set_condition(
            terminating.setdefault("status", {}),
            {
                "type": "Terminating",
                "status": "True",
                "reason": "InstanceDeletionInProgress",
                "message": "CustomResource deletion is in progress",
            },
        )
        result = self._commit("delete", "MODIFIED", rdef, terminating, clone(crd))
        self._drop_custom_resources(result)
        result["metadata"]["finalizers"] = []
        return result

    def _drop_custom_resources(self, crd: JsonDict) -> None:
        """A deleted CRD takes its custom resources with it (the apiextensions finalizer
        `customresourcecleanup.apiextensions.k8s.io` deletes them: their watchers see DELETED), then its
        endpoints are gone (404 on list, get and watch) and the open watches on them end."""
        for gone in resources_from_crd(crd):
            rdef = self._defs.pop((gone.group, gone.version, gone.plural), None)
            if rdef is None:
                continue
            self._by_name.clear()
            if not any(d.storage_key == rdef.storage_key for d in self._defs.values()):
                for obj in builtins.list(self._objects.get(rdef.storage_key, {}).values()):
                    self._commit("delete", "DELETED", rdef, clone(obj), clone(obj))
            for watcher in builtins.list(self._watchers):
                if watcher.storage_key == rdef.storage_key:
                    self.unwatch(watcher)
            for callback in self.on_unregister:
                callback(rdef)

    def bind(self, rdef: ResourceDef, namespace: str | None, name: str, binding: Any) -> JsonDict:
        """POST pods/{name}/binding: the scheduler's (here: a kubelet's) assignment to a node."""
        old = self._objects[rdef.storage_key].get((namespace or "", name))
        if old is None or not is_pod(rdef):
            raise ApiError.not_found(rdef, name)
        new = bind_pod(rdef, clone(old), binding)
        self._commit("create", "MODIFIED", rdef, new, old, subresource="binding")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def evict(self, rdef: ResourceDef, namespace: str | None, name: str, eviction: Any) -> JsonDict:
        """POST pods/{name}/eviction: ``DisruptionTarget`` on a live pod, then its deletion."""
        old = self._objects[rdef.storage_key].get((namespace or "", name))
        if old is None or not is_pod(rdef):
            raise ApiError.not_found(rdef, name)
        options = eviction_delete_options(eviction)
        if not is_terminal(old) and not old["metadata"].get("deletionTimestamp"):
            new = clone(old)
            set_condition(new.setdefault("status", {}), disruption_condition())
            self._commit("create", "MODIFIED", rdef, new, old, subresource="eviction")
        self.delete(rdef, namespace, name, options)
        return eviction_success()

    def delete_collection(
        self,
        rdef: ResourceDef,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        options: JsonDict | None = None,
    ) -> JsonDict:
        items = [
            self.delete(rdef, obj["metadata"].get("namespace"), obj["metadata"]["name"], options)[0]
            for obj in self.list(rdef, namespace, label_selector, field_selector)
        ]
        return {
            "kind": f"{rdef.kind}List",
            "apiVersion": rdef.api_version,
            "metadata": {"resourceVersion": self.resource_version},
            "items": items,
        }


def _owner_uids(obj: JsonDict) -> set[str]:
    return {str(ref.get("uid")) for ref in (obj.get("metadata") or {}).get("ownerReferences") or []}


def _spec_of(obj: JsonDict, rdef: ResourceDef) -> JsonDict:
    """Everything that bumps metadata.generation: all but metadata (and status if a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rdef.status_subresource else set())
    return {key: value for key, value in obj.items() if key not in skip}


def age_seconds(timestamp: str, now: datetime.datetime | None = None) -> float:
    moment = now or datetime.datetime.now(tz=datetime.UTC)
    return (moment - parse_rfc3339(timestamp)).total_seconds()
