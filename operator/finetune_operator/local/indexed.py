"""Indexed Jobs in the emulator's Job controller (`completionMode: Indexed`), as kube-controller-manager does:

- each pod gets a completion index in 0..completions-1: the `batch.kubernetes.io/job-completion-index`
  annotation and label, the JOB_COMPLETION_INDEX env var (a downward-API fieldRef to that annotation),
  and the hostname `<job>-<index>` (with the template's `subdomain`, the pod's DNS name under a headless
  Service) [KEP-2214 Indexed Job; the Job docs, "Completion mode"];
- an index is complete once one of its pods succeeded; the Job is Complete when every index is
  (`status.completedIndexes` lists them as intervals, e.g. "0-2,4");
- `backoffLimitPerIndex` [KEP-3850]: an index fails when its pods failed more than that many times, or at
  once on a `FailIndex` podFailurePolicy rule; failed indexes are not retried and are listed in
  `status.failedIndexes`; more than `maxFailedIndexes` failed indexes fail the Job
  (MaxFailedIndexesExceeded), and so does every index being finished with some failed (FailedIndexes).
  The per-index failure count is the pod annotation `batch.kubernetes.io/job-index-failure-count`. With
  backoffLimitPerIndex set, `backoffLimit` defaults to 2147483647.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune_operator.local.semantics import JsonDict

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_ENV = "JOB_COMPLETION_INDEX"
MAX_INT32 = 2147483647


def is_indexed(job: JsonDict) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def default_backoff_limit(spec: JsonDict, default: int) -> int:
    """spec.backoffLimit, defaulted as the API server does (max int32 with backoffLimitPerIndex)."""
    if spec.get("backoffLimit") is not None:
        return int(spec["backoffLimit"])
    return MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else default


def pod_index(pod: JsonDict) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def intervals(indexes: set[int]) -> str:
    """The API's compressed index list: sorted, consecutive runs as "a-b", joined by commas."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


@dataclass
class IndexState:
    """What the controller knows of one Indexed Job's indexes."""

    succeeded: set[int] = field(default_factory=set)
    failures: dict[int, int] = field(default_factory=dict)  # index -> failed pods counted
    failed: set[int] = field(default_factory=set)

    def record(self, pod: JsonDict, verdict: str, action: str, spec: JsonDict) -> None:
        """Account for one finished pod (verdict succeeded|failed|ignored, its podFailurePolicy action)."""
        index = pod_index(pod)
        if index is None:
            return
        if verdict == "succeeded":
            self.succeeded.add(index)
            return
        if verdict != "failed":
            return
        self.failures[index] = self.failures.get(index, 0) + 1
        limit = spec.get("backoffLimitPerIndex")
        if action == "FailIndex" or (limit is not None and self.failures[index] > int(limit)):
            self.failed.add(index)

    def failure(self, spec: JsonDict) -> tuple[str, str] | None:
        """(reason, message) when the failed indexes fail the Job."""
        if not self.failed:
            return None
        limit = spec.get("maxFailedIndexes")
        if limit is not None and len(self.failed) > int(limit):
            return (
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
        completions = int(spec.get("completions") or 1)
        if len(self.succeeded | self.failed) >= completions:
            return ("FailedIndexes", "Job has failed indexes")
        return None

    def complete(self, spec: JsonDict) -> bool:
        return len(self.succeeded) >= int(spec.get("completions") or 1) and not self.failed

    def to_create(self, spec: JsonDict, held: list[JsonDict]) -> list[int]:
        """Indexes that need a new pod: neither succeeded nor failed nor held by a live pod, lowest first,
        up to parallelism pods in all."""
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec["parallelism"]) if spec.get("parallelism") is not None else 1
        busy = {i for i in (pod_index(p) for p in held) if i is not None}
        free = [
            i
            for i in range(completions)
            if i not in self.succeeded and i not in self.failed and i not in busy
        ]
        return free[: max(0, parallelism - len(held))]

    def write(self, status: JsonDict) -> None:
        for key, indexes in (("completedIndexes", self.succeeded), ("failedIndexes", self.failed)):
            if indexes:
                status[key] = intervals(indexes)
            else:
                status.pop(key, None)


def decorate_pod(pod: JsonDict, job: JsonDict, index: int, failures: int) -> None:
    """Give a new pod of an Indexed Job its index: annotation, label, env, hostname, name prefix."""
    meta = pod["metadata"]
    name = job["metadata"]["name"]
    meta["generateName"] = f"{name}-{index}-"
    meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
    meta.setdefault("labels", {})[INDEX_ANNOTATION] = str(index)
    if (job.get("spec") or {}).get("backoffLimitPerIndex") is not None:
        meta["annotations"][FAILURE_COUNT_ANNOTATION] = str(failures)
    spec = pod.setdefault("spec", {})
    spec["hostname"] = f"{name}-{index}"
    ref = {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            env = [e for e in container.get("env") or [] if e.get("name") != INDEX_ENV]
            container["env"] = [{"name": INDEX_ENV, "valueFrom": ref}, *env]
