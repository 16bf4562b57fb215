"""The emulated cluster's garbage collector: dependents of deleted owners go (background, foreground or
orphan propagation), as kube-controller-manager's garbage collector does."""

from __future__ import annotations

from finetune_operator.local.controllers import _Controller
from finetune_operator.local.deletion import FOREGROUND_FINALIZER
from finetune_operator.local.semantics import JsonDict


class GarbageCollector(_Controller):
    """Deletes dependents whose ownerReferences point to deleted owners (background cascade).

    ``propagationPolicy: Orphan`` removes the references instead. ``Foreground``: the owner waits, with
    ``deletionTimestamp`` and the ``foregroundDeletion`` finalizer, while its dependents are deleted; the
    finalizer goes once no dependent with ``blockOwnerDeletion`` is left. A dependent with other live owners
    only loses the reference to the dead one.
    """

    def resync(self) -> None:
        for obj in self.emu.store.all_objects():
            self._check_dangling(obj)

    def handle(self, events: list[JsonDict]) -> None:
        assert self._watcher is not None
        for event in events:
            obj = event["object"]
            meta = obj.get("metadata", {})
            if event["type"] == "DELETED":
                policy = self._watcher.propagations.pop(str(meta.get("uid")), None)
                self._collect(str(meta.get("uid")), orphan=policy == "Orphan")
                for ref in meta.get("ownerReferences") or []:  # a dependent gone may free its owner
                    owner = self.emu.store.by_uid(str(ref.get("uid")))
                    if owner is not None and _in_foreground_deletion(owner):
                        self._foreground(owner)
            elif event["type"] in ("ADDED", "MODIFIED"):
                self._check_dangling(obj)
                if _in_foreground_deletion(obj):
                    self._foreground(obj)

    def _foreground(self, owner: JsonDict) -> None:
        uid = str(owner["metadata"].get("uid"))
        blocking = False
        for dep in self.emu.store.dependents(uid):
            refs = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") == uid]
            blocking = blocking or any(r.get("blockOwnerDeletion") for r in refs)
            if not dep["metadata"].get("deletionTimestamp"):
                self._call("DELETE", dep, {"propagationPolicy": "Background"})
        if not blocking:
            rest = [f for f in owner["metadata"].get("finalizers") or [] if f != FOREGROUND_FINALIZER]
            self._call("PATCH", owner, {"metadata": {"finalizers": rest or None}})

    def _check_dangling(self, obj: JsonDict) -> None:
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            if not self.emu.store.has_uid(str(ref.get("uid"))):
                self._release(obj, str(ref.get("uid")), orphan=False)
                return

    def _collect(self, uid: str, *, orphan: bool) -> None:
        for obj in self.emu.store.dependents(uid):
            self._release(obj, uid, orphan=orphan)

    def _release(self, obj: JsonDict, uid: str, *, orphan: bool) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        alive = [ref for ref in refs if ref.get("uid") != uid and self.emu.store.has_uid(str(ref.get("uid")))]
        if orphan or alive:
            self._call("PATCH", obj, {"metadata": {"ownerReferences": alive or None}})
        elif not obj["metadata"].get("deletionTimestamp"):
            self._call("DELETE", obj, {"propagationPolicy": "Background"})


def _in_foreground_deletion(obj: JsonDict) -> bool:
    meta = obj.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and FOREGROUND_FINALIZER in (meta.get("finalizers") or [])
