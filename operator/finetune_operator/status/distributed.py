"""status.distributed: the world size of a multi-GPU / multi-node job and, while its current attempt runs,
each trainer pod's readiness (from the backend's observation of the attempt's Indexed Job). Pure."""

from __future__ import annotations

from ..api.finetunejob import FinetuneJob
from ..api.jobstatus import DistributedStatus, NodeStatus
from ..backends.base import Observation


def derive_distributed(job: FinetuneJob, current: Observation | None) -> DistributedStatus | None:
    """None for single-process jobs; the pods only while the attempt is not finished (`current`): once it
    is, `pods` is empty and `nodesReady` 0 (explicit values, as the status is merge-patched)."""
    placement = job.spec.placement
    if not placement.distributed:
        return None
    nodes = list(current.nodes) if current is not None else []
    return DistributedStatus(
        world_size=placement.world_size,
        nodes=placement.nodes,
        processes_per_node=placement.procs_per_node,
        nodes_ready=sum(1 for n in nodes if n.get("ready")) if nodes or current is None else None,
        pods=[NodeStatus(index=n["index"], phase=n.get("phase"), ready=bool(n.get("ready"))) for n in nodes]
        if nodes or current is None
        else None,
    )


def readiness_note(job: FinetuneJob, current: Observation) -> str:
    """' (1/2 trainer pods ready)' while a multi-pod attempt is starting, else ''."""
    nodes = current.nodes
    if not nodes:
        return ""
    ready = sum(1 for n in nodes if n.get("ready"))
    expected = job.spec.placement.nodes
    return "" if ready >= expected else f" ({ready}/{expected} trainer pods ready)"
