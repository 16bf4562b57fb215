"""Controllers of the emulated cluster: a garbage collector, a Job controller and a fake kubelet.

They act through :meth:`Emulator.execute` -- the same code path as HTTP requests -- and react to the
store's watch events, like kube-controller-manager does against a real apiserver.
Pods are never run here: the node side (:mod:`finetune_operator.local.kubelet`: the emulated node's kubelet,
:class:`FakeKubelet` for tests) or the local executor drive pod phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any

from finetune_operator.local.indexed import IndexState, decorate_pod, default_backoff_limit, is_indexed
from finetune_operator.local.pods import JOB_TRACKING_FINALIZER
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


def pod_failed(pod: JsonDict, job: JsonDict) -> bool:
    """Whether the Job controller counts the pod as failed (its isPodFailed): with a podFailurePolicy (or
    podReplacementPolicy Failed) only phase Failed; else also a pod being deleted that did not succeed."""
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Failed":
        return True
    spec = job.get("spec") or {}
    if spec.get("podFailurePolicy") or spec.get("podReplacementPolicy") == "Failed":
        return False
    return bool(pod["metadata"].get("deletionTimestamp")) and phase != "Succeeded"


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
    """batch/v1 Jobs -> Pods, modelled on kube-controller-manager's job controller (NonIndexed and Indexed
    completion modes; the Indexed parts are in local/indexed.py)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self._counted: dict[str, dict[str, str]] = {}  # job uid -> pod uid -> succeeded|failed|ignored
        self._failure: dict[str, tuple[str, str]] = {}  # job uid -> (reason, message) by FailJob
        self._indexes: dict[str, IndexState] = {}  # job uid -> Indexed Job index accounting
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
        pods_rdef = self.emu.store.resolve("", "v1", "pods")
        for event in events:
            obj = event["object"]
            meta = obj.get("metadata", {})
            if obj.get("apiVersion") == "batch/v1" and obj.get("kind") == "Job":
                if event["type"] == "DELETED":
                    job_uid = str(meta.get("uid"))
                    self._counted.pop(job_uid, None)
                    self._failure.pop(job_uid, None)
                    self._indexes.pop(job_uid, None)
                    self._forget(job_uid)
                    for pod in self.emu.store.dependents(job_uid, pods_rdef):
                        self._release(pod)  # the Job is gone: its pods are orphans
                else:
                    keys[(meta.get("namespace"), meta.get("name"))] = None
            elif obj.get("apiVersion") == "v1" and obj.get("kind") == "Pod" and event["type"] != "DELETED":
                for ref in meta.get("ownerReferences") or []:
                    if ref.get("controller") and ref.get("kind") == "Job":
                        keys[(meta.get("namespace"), ref.get("name"))] = None
                        if not self.emu.store.has_uid(str(ref.get("uid"))):
                            self._release(obj)  # an orphan pod keeps no tracking finalizer
        for namespace, name in keys:
            self.sync(namespace, name)

    def _release(self, pod: JsonDict) -> None:
        """Remove the pod's job-tracking finalizer (the controller has accounted for the pod)."""
        current = self.emu.store.get("pods", pod["metadata"].get("namespace"), pod["metadata"]["name"])
        if current is None or current["metadata"].get("uid") != pod["metadata"].get("uid"):
            return
        finalizers = current["metadata"].get("finalizers") or []
        if JOB_TRACKING_FINALIZER in finalizers:
            rest = [f for f in finalizers if f != JOB_TRACKING_FINALIZER]
            self._call("PATCH", current, {"metadata": {"finalizers": rest or None}})

    def _delete_pod(self, job_uid: str, pod: JsonDict) -> None:
        """Delete a pod on the controller's own account (suspension, a finished Job): never a failure."""
        self._counted.setdefault(job_uid, {}).setdefault(pod["metadata"]["uid"], "ignored")
        self._call("DELETE", pod)

    def _kick(self, namespace: str, name: str, uid: str) -> None:
        self._timers.pop(uid, None)
        try:
            self.sync(namespace, name)
        except Exception:
            logger.exception("Job controller failed on %s/%s", namespace, name)

    def sync(self, namespace: str, name: str) -> None:
        store = self.emu.store
        job = store.get("jobs.batch", namespace, name)
        if job is None:
            return
        uid = job["metadata"]["uid"]
        spec = job.get("spec") or {}
        status: JsonDict = copy.deepcopy(job.get("status") or {})
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
        if (
            _has_condition(status, "Complete")
            or _has_condition(status, "Failed")
            or job["metadata"].get("deletionTimestamp")
        ):
            for pod in pods:  # a finished or deleted Job accounts for no more pods
                self._release(pod)
            return
        counted = self._counted.setdefault(uid, {})
        indexed = self._indexes.setdefault(uid, IndexState()) if is_indexed(job) else None
        fresh: list[JsonDict] = []  # finished pods this sync accounts for (their finalizers go next)
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            pod_uid = pod["metadata"]["uid"]
            if pod_uid in counted:
                if counted[pod_uid] != "ignored" or phase in ("Succeeded", "Failed"):
                    fresh.append(pod)  # (an ignored pod is released once it is terminal)
                continue
            if phase == "Succeeded":
                counted[pod_uid] = "succeeded"
                fresh.append(pod)
                if indexed is not None:
                    indexed.record(pod, "succeeded", "", spec)
                continue
            if not pod_failed(pod, job):
                continue
            decision = pod_failure_action(spec.get("podFailurePolicy"), pod)
            action = decision[0] if decision else "Count"
            counted[pod_uid] = "ignored" if action == "Ignore" else "failed"
            fresh.append(pod)
            if indexed is not None:
                indexed.record(pod, counted[pod_uid], action, spec)
            if action == "FailJob" and decision and uid not in self._failure:
                self._failure[uid] = ("PodFailurePolicy", decision[1])
        tracked = [p for p in fresh if JOB_TRACKING_FINALIZER in (p["metadata"].get("finalizers") or [])]
        if tracked:  # KEP-2307: first record them as uncounted, then drop the finalizers, then count
            uncounted: JsonDict = {}
            for verdict, key in (("succeeded", "succeeded"), ("failed", "failed")):
                uids = [p["metadata"]["uid"] for p in tracked if counted[p["metadata"]["uid"]] == verdict]
                if uids:
                    uncounted[key] = uids
            if uncounted:
                job["status"] = {**(job.get("status") or {}), "uncountedTerminatedPods": uncounted}
                self._call("PUT", job, job, subresource="status")
                job = store.get("jobs.batch", namespace, name) or job
            for pod in tracked:
                self._release(pod)
        status["uncountedTerminatedPods"] = {}
        succeeded = sum(1 for v in counted.values() if v == "succeeded")
        failed = sum(1 for v in counted.values() if v == "failed")
        live = [
            pod
            for pod in pods
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and pod["metadata"]["uid"] not in counted
        ]
        active = [pod for pod in live if not pod["metadata"].get("deletionTimestamp")]
        terminating = len(live) - len(active)
        # podReplacementPolicy Failed (implied by a podFailurePolicy): a terminating pod keeps its slot
        waits = (
            spec.get("podReplacementPolicy") or ("Failed" if spec.get("podFailurePolicy") else "")
        ) == "Failed"
        now = now_rfc3339()

        failure: tuple[str, str] | None = None
        if spec.get("suspend"):
            for pod in active:
                self._delete_pod(uid, pod)
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
            elif failed > default_backoff_limit(spec, DEFAULT_BACKOFF_LIMIT):
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif deadline is not None and age_seconds(status["startTime"]) >= float(deadline):
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            elif indexed is not None and (index_failure := indexed.failure(spec)) is not None:
                failure = index_failure
            elif indexed.complete(spec) if indexed is not None else succeeded >= completions:
                _set_condition(
                    status,
                    _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                )
                status["completionTime"] = now
            else:
                held = len(active) + (terminating if waits else 0)
                if indexed is not None:
                    holding = active + ([p for p in live if p not in active] if waits else [])
                    for index in indexed.to_create(spec, holding):
                        active.append(self._create_pod(job, index, indexed.failures.get(index, 0)))
                for _ in range(0 if indexed else max(0, min(parallelism, completions - succeeded) - held)):
                    active.append(self._create_pod(job))
                if deadline is not None:
                    self._arm(namespace, name, uid, float(deadline) - age_seconds(status["startTime"]))
        if failure is not None:
            for pod in active:
                self._delete_pod(uid, pod)
            active = []
            _set_condition(status, _condition("FailureTarget", failure[0], failure[1]))
            _set_condition(status, _condition("Failed", failure[0], failure[1]))
        status["terminating"] = terminating
        if indexed is not None:
            indexed.write(status)
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
            for pod in pods:
                self._release(pod)

    def _arm(self, namespace: str, name: str, uid: str, delay: float) -> None:
        if uid not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[uid] = loop.call_later(max(0.0, delay) + 0.01, self._kick, namespace, name, uid)

    def _forget(self, uid: str) -> None:
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def _create_pod(self, job: JsonDict, index: int | None = None, failures: int = 0) -> JsonDict:
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
                "finalizers": [JOB_TRACKING_FINALIZER],
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
        if index is not None:
            decorate_pod(pod, job, index, failures)
        rdef = self.emu.store.resolve("", "v1", "pods")
        return self.emu.execute("POST", rdef, meta["namespace"], None, body=pod)[1]


def __getattr__(name: str) -> Any:
    """``FakeKubelet`` lives in :mod:`finetune_operator.local.kubelet` (kept importable from here)."""
    if name == "FakeKubelet":
        from finetune_operator.local.kubelet import FakeKubelet

        return FakeKubelet
    raise AttributeError(name)
