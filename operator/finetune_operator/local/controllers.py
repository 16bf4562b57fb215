"""Controllers of the emulated cluster: a garbage collector, a Job controller and a fake kubelet.

They act through :meth:`Emulator.execute` -- the same code path as HTTP requests -- and react to the
store's watch events, like kube-controller-manager does against a real apiserver.
Pods are never run here: :class:`FakeKubelet` (tests) or the local executor drive pod phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any

from finetune_operator.local.semantics import ApiError, JsonDict, ResourceDef, Selector, now_rfc3339
from finetune_operator.local.store import age_seconds
from finetune_operator.local.watching import Watcher

if TYPE_CHECKING:
    from finetune_operator.local.emulator import Emulator

logger = logging.getLogger(__name__)

JOB_TRACKING_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")
DEFAULT_BACKOFF_LIMIT = 6


class _Controller:
    """Consumes every watch event of the store in one background task."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self._watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._watcher = self.emu.store.watch(None, Selector(), None)
        self.resync()
        self._task = asyncio.create_task(self._run(), name=type(self).__name__)

    async def stop(self) -> None:
        if self._watcher is not None:
            self.emu.store.unwatch(self._watcher)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._watcher is not None
        while True:
            event = await self._watcher.queue.get()
            if event is None:
                return
            batch = [event]
            while not self._watcher.queue.empty():
                item = self._watcher.queue.get_nowait()
                if item is None:
                    break
                batch.append(item)
            try:
                self.handle(batch)
            except Exception:  # a controller never dies of one bad object
                logger.exception("%s failed to handle events", type(self).__name__)

    def resync(self) -> None:
        """Look at the whole state (at start)."""

    def handle(self, events: list[JsonDict]) -> None:
        raise NotImplementedError

    def _rdef(self, obj: JsonDict) -> ResourceDef:
        return self.emu.store.for_kind(str(obj.get("apiVersion")), str(obj.get("kind")))

    def _call(self, method: str, obj: JsonDict, body: Any = None, subresource: str | None = None) -> None:
        meta = obj["metadata"]
        try:
            self.emu.execute(
                method,
                self._rdef(obj),
                meta.get("namespace"),
                meta["name"],
                subresource=subresource,
                body=body,
            )
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise


class GarbageCollector(_Controller):
    """Deletes dependents whose ownerReferences point to deleted owners (background cascade).

    ``propagationPolicy: Orphan`` removes the references instead; ``Foreground`` acts as background.
    A dependent with other live owners only loses the reference to the dead one.
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
            elif event["type"] in ("ADDED", "MODIFIED"):
                self._check_dangling(obj)

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


def _condition(kind: str, reason: str, message: str, status: str = "True") -> JsonDict:
    now = now_rfc3339()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _has_condition(status: JsonDict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def _set_condition(status: JsonDict, cond: JsonDict) -> None:
    conds = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]]
    status["conditions"] = [*conds, cond]


def pod_failure_action(policy: JsonDict | None, pod: JsonDict) -> tuple[str, str] | None:
    """The first matching podFailurePolicy rule's (action, message), as the Job controller decides."""
    pod_status = pod.get("status") or {}
    for index, rule in enumerate((policy or {}).get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if on_codes:
            values = set(on_codes.get("values") or [])
            for cs in pod_status.get("containerStatuses") or []:
                if on_codes.get("containerName") and cs.get("name") != on_codes["containerName"]:
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code is None or code == 0:
                    continue
                if (code in values) == (on_codes.get("operator", "In") == "In"):
                    return rule["action"], (
                        f"Container {cs.get('name')} for pod {pod['metadata']['namespace']}/"
                        f"{pod['metadata']['name']} failed with exit code {code} matching "
                        f"{rule['action']} rule at index {index}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            for cond in pod_status.get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get(
                    "status", "True"
                ):
                    return rule["action"], (
                        f"Pod {pod['metadata']['namespace']}/{pod['metadata']['name']} has "
                        f"condition {cond['type']} matching {rule['action']} rule at index "
                        f"{index}"
                    )
    return None


class JobController(_Controller):
    """batch/v1 Jobs -> Pods, modelled on kube-controller-manager's job controller (non-indexed)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self._counted: dict[str, dict[str, str]] = {}  # job uid -> pod uid -> succeeded|failed|ignored
        self._failure: dict[str, tuple[str, str]] = {}  # job uid -> (reason, message) by FailJob
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await super().stop()

    def resync(self) -> None:
        for job in self.emu.store.list("jobs.batch"):
            self.sync(job["metadata"]["namespace"], job["metadata"]["name"])

    def handle(self, events: list[JsonDict]) -> None:
        keys: dict[tuple[str, str], None] = {}
        for event in events:
            obj = event["object"]
            meta = obj.get("metadata", {})
            if obj.get("apiVersion") == "batch/v1" and obj.get("kind") == "Job":
                if event["type"] == "DELETED":
                    self._counted.pop(str(meta.get("uid")), None)
                    self._failure.pop(str(meta.get("uid")), None)
                    self._forget(str(meta.get("uid")))
                else:
                    keys[(meta.get("namespace"), meta.get("name"))] = None
            elif obj.get("apiVersion") == "v1" and obj.get("kind") == "Pod":
                for ref in meta.get("ownerReferences") or []:
                    if ref.get("controller") and ref.get("kind") == "Job":
                        keys[(meta.get("namespace"), ref.get("name"))] = None
        for namespace, name in keys:
            self.sync(namespace, name)

    def _kick(self, namespace: str, name: str, uid: str) -> None:
        self._timers.pop(uid, None)
        try:
            self.sync(namespace, name)
        except Exception:
            logger.exception("Job controller failed on %s/%s", namespace, name)

    def sync(self, namespace: str, name: str) -> None:
        store = self.emu.store
        job = store.get("jobs.batch", namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        uid = job["metadata"]["uid"]
        spec = job.get("spec") or {}
        status: JsonDict = copy.deepcopy(job.get("status") or {})
        if _has_condition(status, "Complete") or _has_condition(status, "Failed"):
            return
        pods = [
            pod
            for pod in sorted(  # the pods of this Job (an index, not a scan), in list order
                store.dependents(uid, store.resolve("", "v1", "pods")), key=lambda p: p["metadata"]["name"]
            )
            if pod["metadata"].get("namespace") == namespace
            and any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in pod["metadata"].get("ownerReferences") or []
            )
        ]
        counted = self._counted.setdefault(uid, {})
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            pod_uid = pod["metadata"]["uid"]
            if phase not in ("Succeeded", "Failed") or pod_uid in counted:
                continue
            if phase == "Succeeded":
                counted[pod_uid] = "succeeded"
                continue
            decision = pod_failure_action(spec.get("podFailurePolicy"), pod)
            action = decision[0] if decision else "Count"
            counted[pod_uid] = "ignored" if action == "Ignore" else "failed"
            if action == "FailJob" and decision and uid not in self._failure:
                self._failure[uid] = ("PodFailurePolicy", decision[1])
        succeeded = sum(1 for v in counted.values() if v == "succeeded")
        failed = sum(1 for v in counted.values() if v == "failed")
        active = [
            pod
            for pod in pods
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not pod["metadata"].get("deletionTimestamp")
        ]
        now = now_rfc3339()

        failure: tuple[str, str] | None = None
        if spec.get("suspend"):
            for pod in active:
                self._call("DELETE", pod)
            active = []
            if not _has_condition(status, "Suspended"):
                _set_condition(status, _condition("Suspended", "JobSuspended", "Job suspended"))
        else:
            if _has_condition(status, "Suspended"):
                _set_condition(status, _condition("Suspended", "JobResumed", "Job resumed", status="False"))
                status["startTime"] = now  # the deadline restarts on resume
            status.setdefault("startTime", now)
            deadline = spec.get("activeDeadlineSeconds")
            completions = int(spec.get("completions") or 1)
            parallelism = int(spec["parallelism"]) if spec.get("parallelism") is not None else 1
            if uid in self._failure:
                failure = self._failure[uid]
            elif failed > int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)):
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif deadline is not None and age_seconds(status["startTime"]) >= float(deadline):
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            elif succeeded >= completions:
                _set_condition(
                    status,
                    _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                )
                status["completionTime"] = now
            else:
                for _ in range(max(0, min(parallelism, completions - succeeded) - len(active))):
                    active.append(self._create_pod(job))
                if deadline is not None:
                    self._arm(namespace, name, uid, float(deadline) - age_seconds(status["startTime"]))
        if failure is not None:
            for pod in active:
                self._call("DELETE", pod)
            active = []
            _set_condition(status, _condition("FailureTarget", failure[0], failure[1]))
            _set_condition(status, _condition("Failed", failure[0], failure[1]))
        for key, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[key] = value
            else:
                status.pop(key, None)
        status["ready"] = sum(1 for pod in active if _has_condition(pod.get("status") or {}, "Ready"))
        if status != (job.get("status") or {}):
            job["status"] = status
            self._call("PUT", job, job, subresource="status")
        if _has_condition(status, "Complete") or _has_condition(status, "Failed"):
            self._forget(uid)

    def _arm(self, namespace: str, name: str, uid: str, delay: float) -> None:
        if uid not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[uid] = loop.call_later(max(0.0, delay) + 0.01, self._kick, namespace, name, uid)

    def _forget(self, uid: str) -> None:
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def _create_pod(self, job: JsonDict) -> JsonDict:
        meta = job["metadata"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        for key in JOB_TRACKING_LABELS:
            labels[key] = meta["uid"]
        labels["job-name"] = labels["batch.kubernetes.io/job-name"] = meta["name"]
        pod: JsonDict = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }
        rdef = self.emu.store.resolve("", "v1", "pods")
        return self.emu.execute("POST", rdef, meta["namespace"], None, body=pod)[1]


class FakeKubelet:
    """Drives pod phases the way a kubelet would: status-subresource writes through the emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    async def pods(
        self, namespace: str | None = None, *, label_selector: str | None = None, phase: str | None = None
    ) -> list[JsonDict]:
        fields = f"status.phase={phase}" if phase else None
        return await self.emu.list("pods", namespace, label_selector=label_selector, field_selector=fields)

    async def _write(self, pod: JsonDict, status: JsonDict) -> JsonDict:
        meta = pod["metadata"]
        current = await self.emu.get("pods", meta["namespace"], meta["name"])
        merged = {**(current.get("status") or {}), **status}
        return await self.emu.patch(
            "pods", meta["namespace"], meta["name"], {"status": merged}, subresource="status"
        )

    @staticmethod
    def _container(pod: JsonDict) -> JsonDict:
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        return {
            "name": containers[0].get("name", "main"),
            "image": containers[0].get("image", ""),
            "restartCount": 0,
        }

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
        container = {
            **self._container(pod),
            "ready": True,
            "started": True,
            "state": {"running": {"startedAt": now}},
        }
        return await self._write(
            pod,
            {
                "phase": "Running",
                "startTime": now,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "conditions": self._conditions(True),
                "containerStatuses": [container],
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
        container = {
            **self._container(pod),
            "ready": False,
            "started": False,
            "state": {"terminated": terminated},
        }
        status: JsonDict = {
            "phase": phase,
            "startTime": started,
            "containerStatuses": [container],
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
