"""In-cluster engines (sentenceTransformers, adapter): one batch/v1 Job per attempt, owned by the FinetuneJob.

submit  = create-if-absent the config ConfigMap, the per-job RBAC and the attempt's Job (deterministic
          names: a restart or a replayed event never creates a duplicate);
observe = read the attempt's Job and Pods (from the operator's watch cache, else the API): pod phase, the
          trainer's exit code (0 ok, 3 invalid, 4 interrupted), its termination message (the result JSON),
          and whether the pod was disrupted (evicted, preempted, node lost);
cancel  = delete the attempt's Job in the foreground: its pod gets SIGTERM and the grace period, and the
          trainer checkpoints and exits 4.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..api.finetunejob import FinetuneJob
from ..api.trainerconfig import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from ..builders import (
    build_config_map,
    build_rbac,
    build_service,
    build_trainer_config,
    build_trainer_job,
    multi_pod,
)
from ..kube import JsonDict
from ..naming import ANNOTATION_COMPLETION_INDEX, trainer_job_name
from .base import Observation
from .ports import BackendContext

logger = logging.getLogger(__name__)

_RESOURCES = {
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ConfigMap": "configmaps",
    "Job": "jobs",
    "Service": "services",
}
POD_EVENT_GRACE_SECONDS = 5.0  # how long a finished Job waits for its finished pod's watch event
AWAITING_PODS_FORGET_SECONDS = 3600.0
DISRUPTION_REASONS = (
    "Evicted",
    "Preempted",
    "Preempting",
    "NodeLost",
    "Shutdown",
    "Terminated",
    "DeletionByTaintManager",
    "TerminationByKubelet",
    "PreemptionByScheduler",
    "EvictionByEvictionAPI",
    "DeletionByPodGC",
    "NodeShutdown",
)


def _has_condition(status: JsonDict, kind: str) -> JsonDict | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _terminated(pod: JsonDict) -> JsonDict | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def _parse_result(message: str | None) -> dict[str, Any] | None:
    if not message:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def is_disruption(pod: JsonDict) -> bool:
    """Whether a failed pod was disrupted (not the trainer's fault): eviction, preemption, node loss."""
    status = pod.get("status") or {}
    if status.get("reason") in DISRUPTION_REASONS:
        return True
    cond = _has_condition(status, "DisruptionTarget")
    return cond is not None


def _index(pod: JsonDict) -> str:
    return str(((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_COMPLETION_INDEX, ""))


def _gang(tjob: JsonDict, finished: list[JsonDict]) -> list[JsonDict]:
    """The finished pods that decide a multi-pod (Indexed) attempt, most telling first: any failed pod (but
    not a disrupted one the Job replaces itself, under an Ignore rule); else, once every index succeeded,
    the succeeded pods, rank 0's (the one with the result message) first; else none (still running)."""
    spec = tjob.get("spec") or {}
    completions = int(spec.get("completions") or 1)
    if completions <= 1:
        return finished
    rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
    replaced = any(r.get("action") == "Ignore" for r in rules)
    failed = [
        p
        for p in finished
        if (p.get("status") or {}).get("phase") == "Failed" and not (replaced and is_disruption(p))
    ]
    if failed:
        return failed
    succeeded = [p for p in finished if (p.get("status") or {}).get("phase") == "Succeeded"]
    if len({_index(p) for p in succeeded}) < completions:
        return []
    return sorted(succeeded, key=lambda p: _parse_result((_terminated(p) or {}).get("message")) is None)


def observe_pods(tjob: JsonDict | None, pods: list[JsonDict]) -> Observation:
    """Pure: what one attempt's Job and Pods say (exposed for unit tests); a multi-pod attempt's
    observation also lists its pods by completion index."""
    obs = _observe(tjob, pods)
    if tjob is None or int((tjob.get("spec") or {}).get("completions") or 1) <= 1:
        return obs
    latest: dict[str, JsonDict] = {}
    for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", ""))):
        if _index(pod):
            latest[_index(pod)] = pod  # the newest pod of each index (an earlier one may have been replaced)
    nodes = tuple(
        {
            "index": int(index),
            "phase": (pod.get("status") or {}).get("phase") or "Pending",
            "ready": _has_condition(pod.get("status") or {}, "Ready") is not None,
        }
        for index, pod in sorted(latest.items(), key=lambda item: int(item[0]))
    )
    return replace(obs, nodes=nodes)


def _observe(tjob: JsonDict | None, pods: list[JsonDict]) -> Observation:
    if tjob is None:
        return Observation(state="none")
    jstatus = tjob.get("status") or {}
    phases = {(p.get("status") or {}).get("phase") for p in pods}
    if (tjob.get("spec") or {}).get("suspend") and not phases & {"Running", "Succeeded", "Failed"}:
        # Only Kueue suspends a trainer Job (the operator's own suspend deletes it): not admitted yet.
        queue = ((tjob.get("metadata") or {}).get("labels") or {}).get("kueue.x-k8s.io/queue-name", "")
        return Observation(
            state="suspended",
            reason="QueuedInKueue",
            message=f"trainer Job {tjob.get('metadata', {}).get('name')} waits for Kueue admission"
            + (f" in queue {queue}" if queue else ""),
        )
    ordered = sorted(pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")))
    started = jstatus.get("startTime")
    for pod in ordered:
        started = (pod.get("status") or {}).get("startTime") or started
        if (pod.get("status") or {}).get("startTime"):
            break
    running = [p for p in ordered if (p.get("status") or {}).get("phase") == "Running"]
    finished = _gang(
        tjob, [p for p in ordered if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    )
    for pod in finished:
        pstatus = pod.get("status") or {}
        term = _terminated(pod) or {}
        code = term.get("exitCode")
        result = _parse_result(term.get("message"))
        message = str(term.get("message") or pstatus.get("message") or "")
        if pstatus.get("phase") == "Succeeded" or code == EXIT_OK:
            return Observation(
                state="succeeded",
                result=result,
                started_at=started,
                finished_at=term.get("finishedAt"),
                message="trainer finished",
            )
        if is_disruption(pod):
            target = _has_condition(pstatus, "DisruptionTarget") or {}
            reason = str(pstatus.get("reason") or target.get("reason") or "Disrupted")
            why = str(pstatus.get("message") or target.get("message") or reason)
            return Observation(
                state="failed",
                disruption=True,
                reason=reason,
                started_at=started,
                finished_at=term.get("finishedAt"),
                message=f"pod {pod.get('metadata', {}).get('name')} {reason}: {why}",
            )
        if code == EXIT_INVALID:
            detail = (result or {}).get("message") or (result or {}).get("error") or message
            return Observation(
                state="invalid",
                reason="InvalidData",
                result=result,
                started_at=started,
                finished_at=term.get("finishedAt"),
                message=str(detail)[:1000],
            )
        if code == EXIT_INTERRUPTED:
            return Observation(
                state="interrupted",
                reason="Interrupted",
                result=result,
                started_at=started,
                finished_at=term.get("finishedAt"),
                message="trainer interrupted after a checkpoint",
            )
        detail = (result or {}).get("message") or (result or {}).get("error") or message
        return Observation(
            state="failed",
            reason=str(term.get("reason") or "Error"),
            result=result,
            started_at=started,
            finished_at=term.get("finishedAt"),
            message=f"trainer exited with code {code}: {str(detail)[:800]}".rstrip(": "),
        )
    failed = _has_condition(jstatus, "Failed")
    if failed is not None:  # the pods are gone: the Job's podFailurePolicy message says what happened
        reason = str(failed.get("reason") or "JobFailed")
        text = str(failed.get("message") or "")
        finished_at = failed.get("lastTransitionTime")
        if "DisruptionTarget" in text:
            return Observation(
                state="failed",
                disruption=True,
                reason="Disrupted",
                message=text,
                started_at=started,
                finished_at=finished_at,
            )
        if f"exit code {EXIT_INVALID} " in text + " ":
            return Observation(
                state="invalid",
                reason="InvalidData",
                message=text,
                started_at=started,
                finished_at=finished_at,
            )
        if f"exit code {EXIT_INTERRUPTED} " in text + " ":
            return Observation(
                state="interrupted",
                reason="Interrupted",
                message=text,
                started_at=started,
                finished_at=finished_at,
            )
        return Observation(
            state="failed",
            reason=reason,
            message=str(failed.get("message") or reason),
            started_at=started,
            finished_at=failed.get("lastTransitionTime"),
        )
    if _has_condition(jstatus, "Complete") is not None:
        return Observation(
            state="succeeded",
            started_at=started,
            finished_at=jstatus.get("completionTime"),
            message="trainer Job complete (no result message)",
        )
    if running:
        return Observation(state="running", started_at=started, message="trainer running")
    return Observation(state="pending", message="trainer pod pending")


class StaleChild(RuntimeError):
    """A child of that name exists but belongs to a deleted FinetuneJob (its GC is pending): retry later."""


class InClusterBackend:
    """Runs the trainer image as a batch/v1 Job (one per attempt)."""

    name = "incluster"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        self._awaiting_pods: dict[str, float] = {}  # Job uid -> when it was first seen ended, pods not

    async def submit(self, job: FinetuneJob, attempt: int) -> Observation:
        kube, settings = self.ctx.kube, self.ctx.settings
        ns = job.metadata.namespace or "default"
        config = build_trainer_config(job, settings, attempt)
        objects: list[JsonDict] = [build_config_map(job, settings, config), *build_rbac(job, settings)]
        if multi_pod(job):  # the headless Service first: the pods' DNS names exist when they start
            objects.append(build_service(job, attempt))
        name = trainer_job_name(job.metadata.name, attempt)
        uid = job.metadata.uid or ""
        existing = self.ctx.cache.child(uid, "Job", name)
        if existing is None:
            for obj in objects:
                await kube.create_if_absent(_RESOURCES[obj["kind"]], ns, obj)
            existing = await kube.create_if_absent("jobs", ns, build_trainer_job(job, settings, attempt))
            owners = [ref.get("uid") for ref in existing["metadata"].get("ownerReferences") or []]
            if uid not in owners:
                raise StaleChild(f"Job {ns}/{name} belongs to an older FinetuneJob of the same name")
            self.ctx.cache.put_child(uid, existing, deleted=False)
        return observe_pods(existing, [])

    async def _pods(self, uid: str, ns: str, tjob: JsonDict) -> tuple[JsonDict, list[JsonDict]]:
        """The Job (as far as it can be trusted yet) and its pods, from the watch cache where it is
        consistent enough.

        The cache may lag behind the Job. A running Job whose pods we have not seen yet needs no API read:
        their watch events are on the way, and each reconciles the job again. Neither does a finished Job
        whose pods we saw, none finished yet, for up to POD_EVENT_GRACE_SECONDS: the pods' own events are
        on the way (the Job controller counted them), and until then the Job is observed without its end
        condition (the result is in the pod's termination message, and a finished status is final); past
        that, or with no pod seen at all, the pods are read from the API (on every look, until a finished pod
        is seen or the Job is gone: never back to the cache's view).
        """
        name = tjob["metadata"]["name"]
        job_uid = str(tjob["metadata"].get("uid") or "")
        pods = self.ctx.cache.pods_of(uid, name)
        jstatus = tjob.get("status") or {}
        ended = _has_condition(jstatus, "Failed") or _has_condition(jstatus, "Complete")
        done = [p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        if not ended or done:
            self._awaiting_pods.pop(job_uid, None)
            return tjob, pods
        clock = time.monotonic()
        since = self._awaiting_pods.get(job_uid)
        if since is None:  # (entries of Jobs deleted meanwhile are dropped after a while)
            for key in [
                k for k, t in self._awaiting_pods.items() if clock - t > AWAITING_PODS_FORGET_SECONDS
            ]:
                del self._awaiting_pods[key]
            since = self._awaiting_pods[job_uid] = clock
        if pods and clock - since < POD_EVENT_GRACE_SECONDS:
            now = datetime.now(UTC)
            self.ctx.wake_at(uid, now + timedelta(seconds=since + POD_EVENT_GRACE_SECONDS - clock), now)
            conditions = [
                c for c in jstatus.get("conditions") or [] if c.get("type") not in ("Failed", "Complete")
            ]
            return {**tjob, "status": {**jstatus, "conditions": conditions}}, pods
        pods = await self.ctx.kube.list("pods", ns, label_selector=f"job-name={name}")
        for pod in pods:
            self.ctx.cache.put_child(uid, pod, deleted=False)
        return tjob, pods

    async def observe(self, job: FinetuneJob, attempt: int) -> Observation:
        uid = job.metadata.uid or ""
        ns = job.metadata.namespace or "default"
        name = trainer_job_name(job.metadata.name, attempt)
        tjob = self.ctx.cache.child(uid, "Job", name)
        if tjob is None:
            tjob = await self.ctx.kube.get_or_none("jobs", ns, name)
            if tjob is not None:
                self.ctx.cache.put_child(uid, tjob, deleted=False)
        if tjob is None or tjob["metadata"].get("deletionTimestamp"):
            return Observation(state="none")
        return observe_pods(*await self._pods(uid, ns, tjob))

    async def cancel(self, job: FinetuneJob, attempt: int) -> None:
        ns = job.metadata.namespace or "default"
        name = trainer_job_name(job.metadata.name, attempt)
        await self.ctx.kube.delete("jobs", ns, name, propagation_policy="Foreground")
        self.ctx.cache.put_child(
            job.metadata.uid or "", {"kind": "Job", "metadata": {"name": name}}, deleted=True
        )
