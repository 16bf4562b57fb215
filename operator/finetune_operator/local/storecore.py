"""The stateful core of the emulated kube-apiserver: objects, resourceVersions, history, watches.

Every operation is synchronous (atomic on the event loop), like one etcd transaction. Reads, watches and
the one commit path live here; :mod:`finetune_operator.local.deletion` adds deletion (graceful, finalizers,
CRD cleanup, eviction, binding) and :mod:`finetune_operator.local.store` the writes with admission.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import dataclasses
import pickle
import random
import time
from collections.abc import Callable, Iterator

from finetune_operator.local.semantics import (
    ApiError,
    JsonDict,
    ResourceDef,
    Selector,
    clone,
)
from finetune_operator.local.watching import Watcher, WatchEvent


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


class StoreCore:
    """Objects by resource, their uids and dependents, the resourceVersion, the history and the watchers."""

    def __init__(
        self,
        *,
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
        self.dry_run_active = False  # inside dry_run(): commits are answered, not stored

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

    @contextlib.contextmanager
    def dry_run(self, active: bool = True) -> Iterator[None]:
        """Within: every write is checked and answered as usual, but nothing is stored (``dryRun=All``)."""
        before, self.dry_run_active = self.dry_run_active, active or self.dry_run_active
        try:
            yield
        finally:
            self.dry_run_active = before

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
        if self.dry_run_active:  # dryRun=All: everything up to the write, nothing stored, no event
            out: JsonDict = clone(obj)
            out["apiVersion"] = rdef.api_version
            if kind == "ADDED":
                out.setdefault("metadata", {}).pop("resourceVersion", None)
            return out
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


def _owner_uids(obj: JsonDict) -> set[str]:
    return {str(ref.get("uid")) for ref in (obj.get("metadata") or {}).get("ownerReferences") or []}
