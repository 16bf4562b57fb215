"""The node side of the emulated cluster: the emulated node's kubelet and a test driver of pod phases.

* :class:`NodeAgent` (started with the emulator's controllers) finishes pod deletions as the real node
  components do: for a terminating pod bound to the emulated node (:data:`NODE_NAME`) it plays the kubelet
  -- the container stops at once on SIGTERM, the pod is written terminal (phase ``Failed``, container
  state ``terminated`` with exit code 143, or 137 ``ContainerStatusUnknown`` if it never started), then
  deleted again with ``gracePeriodSeconds: 0``; for a terminating pod bound to no node it plays the pod
  garbage collector (phase ``Failed``, then a forced delete). Pods bound to another node (the local
  executor's) are that kubelet's business.
* :class:`FakeKubelet` is what tests call to move pods through their phases (Running, Succeeded, Failed,
  a node-pressure eviction), binding the pod to the emulated node first, as the scheduler would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune_operator.local.controllers import _Controller
from finetune_operator.local.pods import is_terminal
from finetune_operator.local.semantics import JsonDict, now_rfc3339

if TYPE_CHECKING:
    from finetune_operator.local.emulator import Emulator

NODE_NAME = "emulator-node"


def bind_to_node(emu: Emulator, meta: JsonDict, node: str) -> None:
    """POST the pod's `binding` subresource, as the scheduler does (ApiError if it cannot be bound)."""
    emu.execute(
        "POST",
        emu.store.find("pods"),
        meta["namespace"],
        meta["name"],
        subresource="binding",
        body={
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta.get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        },
    )


SIGTERM_EXIT = 143  # 128 + SIGTERM: the container stopped on the kubelet's SIGTERM
UNKNOWN_EXIT = 137  # what the kubelet reports for a container that never ran in a deleted pod


def container_status(pod: JsonDict, state: JsonDict, *, ready: bool = False) -> JsonDict:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return {
        "name": containers[0].get("name", "main"),
        "image": containers[0].get("image", ""),
        "restartCount": 0,
        "ready": ready,
        "started": ready,
        "state": state,
    }


def _not_ready(status: JsonDict, reason: str) -> list[JsonDict]:
    now = now_rfc3339()
    conds: list[JsonDict] = []
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Ready", "ContainersReady") and cond.get("status") == "True":
            conds.append({**cond, "status": "False", "reason": reason, "lastTransitionTime": now})
        else:
            conds.append(cond)
    return conds


def stopped_status(pod: JsonDict) -> JsonDict:
    """The terminal status a kubelet writes for a pod it stopped on deletion (a SIGTERM-abiding container)."""
    status: JsonDict = dict(pod.get("status") or {})
    now = now_rfc3339()
    running = None
    for cs in status.get("containerStatuses") or []:
        running = (cs.get("state") or {}).get("running") or running
    if running is not None:
        term: JsonDict = {
            "exitCode": SIGTERM_EXIT,
            "reason": "Error",
            "startedAt": running.get("startedAt", now),
            "finishedAt": now,
        }
    else:
        term = {
            "exitCode": UNKNOWN_EXIT,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "finishedAt": now,
        }
    status["phase"] = "Failed"
    status["containerStatuses"] = [container_status(pod, {"terminated": term})]
    status["conditions"] = _not_ready(status, "PodFailed")
    return status


class NodeAgent(_Controller):
    """The emulated node's kubelet for terminating pods, and the pod GC for unbound terminating pods."""

    def __init__(self, emulator: Emulator, node_name: str = NODE_NAME) -> None:
        super().__init__(emulator)
        self.node_name = node_name

    def resync(self) -> None:
        for pod in self.emu.store.list("pods"):
            self._check(pod)

    def handle(self, events: list[JsonDict]) -> None:
        latest: dict[str, JsonDict] = {}
        for event in events:
            obj = event["object"]
            if obj.get("kind") != "Pod" or obj.get("apiVersion") != "v1":
                continue
            uid = str(obj["metadata"].get("uid"))
            if event["type"] == "DELETED":
                latest.pop(uid, None)
            else:
                latest[uid] = obj
        for pod in latest.values():
            self._check(pod)

    def _check(self, seen: JsonDict) -> None:
        meta = seen["metadata"]
        if not meta.get("deletionTimestamp"):
            return
        node = (seen.get("spec") or {}).get("nodeName")
        if node and node != self.node_name:
            return  # another kubelet's pod
        pod = self.emu.store.get("pods", meta.get("namespace"), meta["name"])
        if pod is None or pod["metadata"].get("uid") != meta.get("uid"):
            return
        if not is_terminal(pod):
            self._call("PUT", pod, {**pod, "status": stopped_status(pod)}, subresource="status")
        if pod["metadata"].get("deletionGracePeriodSeconds"):  # the kubelet confirms: delete now
            self._call(
                "DELETE", pod, {"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}}
            )


class FakeKubelet:
    """Drives pod phases the way a kubelet would: status-subresource writes through the emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    async def pods(
        self, namespace: str | None = None, *, label_selector: str | None = None, phase: str | None = None
    ) -> list[JsonDict]:
        fields = f"status.phase={phase}" if phase else None
        return await self.emu.list("pods", namespace, label_selector=label_selector, field_selector=fields)

    async def bind(self, pod: JsonDict) -> JsonDict:
        """Bind the pod to the emulated node (as the scheduler does), if it is not bound yet."""
        meta = pod["metadata"]
        current = await self.emu.get("pods", meta["namespace"], meta["name"])
        if not (current.get("spec") or {}).get("nodeName"):
            bind_to_node(self.emu, meta, NODE_NAME)
            current = await self.emu.get("pods", meta["namespace"], meta["name"])
        return current

    async def _write(self, pod: JsonDict, status: JsonDict) -> JsonDict:
        meta = pod["metadata"]
        current = await self.bind(pod)
        merged = {**(current.get("status") or {}), **status}
        return await self.emu.patch(
            "pods", meta["namespace"], meta["name"], {"status": merged}, subresource="status"
        )

    @staticmethod
    def _conditions(ready: bool, reason: str | None = None) -> list[JsonDict]:
        now = now_rfc3339()
        result = []
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
            flag = ready or kind in ("Initialized", "PodScheduled")
            cond: JsonDict = {
                "type": kind,
                "status": "True" if flag else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            if not flag and reason:
                cond["reason"] = reason
            result.append(cond)
        return result

    async def run(self, pod: JsonDict) -> JsonDict:
        now = now_rfc3339()
        return await self._write(
            pod,
            {
                "phase": "Running",
                "startTime": now,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "conditions": self._conditions(True),
                "containerStatuses": [container_status(pod, {"running": {"startedAt": now}}, ready=True)],
            },
        )

    async def _terminate(
        self,
        pod: JsonDict,
        phase: str,
        *,
        exit_code: int,
        reason: str,
        message: str,
        extra: JsonDict | None = None,
        conditions: list[JsonDict] | None = None,
    ) -> JsonDict:
        now = now_rfc3339()
        current = await self.emu.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        started = (current.get("status") or {}).get("startTime", now)
        terminated: JsonDict = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now,
        }
        if message:
            terminated["message"] = message
        status: JsonDict = {
            "phase": phase,
            "startTime": started,
            "containerStatuses": [container_status(pod, {"terminated": terminated})],
            "conditions": self._conditions(False, "PodCompleted" if phase == "Succeeded" else "PodFailed"),
        }
        status.update(extra or {})
        status["conditions"] = [*status["conditions"], *(conditions or [])]
        return await self._write(pod, status)

    async def succeed(self, pod: JsonDict, exit_code: int = 0, message: str = "") -> JsonDict:
        return await self._terminate(
            pod, "Succeeded", exit_code=exit_code, reason="Completed", message=message
        )

    async def fail(self, pod: JsonDict, exit_code: int = 1, message: str = "") -> JsonDict:
        return await self._terminate(pod, "Failed", exit_code=exit_code, reason="Error", message=message)

    async def evict(self, pod: JsonDict, message: str = "The node was low on resource: memory.") -> JsonDict:
        """A node-pressure eviction by the kubelet (the pod stays, Failed with reason Evicted)."""
        disruption = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "TerminationByKubelet",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339(),
        }
        return await self._terminate(
            pod,
            "Failed",
            exit_code=137,
            reason="Error",
            message="",
            extra={"reason": "Evicted", "message": message},
            conditions=[disruption],
        )
