"""Deletion in the emulated kube-apiserver: finalizers, graceful pod deletion (``deletionTimestamp`` first),
a CRD's cleanup of its custom resources, and the pod subresources that end in a write or a delete
(``pods/binding``, ``pods/eviction``). See docs/emulator.md for the real server's behaviour.
"""

from __future__ import annotations

import builtins
from typing import Any

from finetune_operator.local.admission import is_crd
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
    ResourceDef,
    clone,
    resources_from_crd,
)
from finetune_operator.local.storecore import StoreCore

FOREGROUND_FINALIZER = "foregroundDeletion"


class Deletions(StoreCore):
    """DELETE (one object or a collection), and the pod subresources binding and eviction."""

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
        # Foreground: the owner stays, held by the foregroundDeletion finalizer, until the garbage collector
        # has deleted its blocking dependents
        foreground = policy == "Foreground" and not meta.get("deletionTimestamp")
        finalizers = bool(meta.get("finalizers")) or foreground
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
            if foreground and FOREGROUND_FINALIZER not in (meta.get("finalizers") or []):
                new["metadata"]["finalizers"] = [*(meta.get("finalizers") or []), FOREGROUND_FINALIZER]
            new["metadata"]["deletionTimestamp"] = deletion_timestamp(period)
            new["metadata"]["deletionGracePeriodSeconds"] = period
            if rdef.has_generation:
                new["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            return self._commit("delete", "MODIFIED", rdef, new, clone(old)), False
        return self._delete_now(rdef, clone(old), old, policy), True

    def _delete_now(self, rdef: ResourceDef, obj: JsonDict, old: JsonDict, policy: Any) -> JsonDict:
        if is_crd(rdef) and not self.dry_run_active:
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
