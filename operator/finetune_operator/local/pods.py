"""Pod semantics of the emulated kube-apiserver, pure: graceful deletion, binding, eviction.

As the real server has them (see docs/emulator.md for the citations):

* a pod's DELETE is graceful when the pod is bound to a node and not terminal: ``deletionTimestamp`` is set
  to now + the grace period (``DeleteOptions.gracePeriodSeconds``, else ``spec.terminationGracePeriodSeconds``,
  else 30) and ``deletionGracePeriodSeconds`` to the period; the kubelet stops the containers, writes the
  terminal phase and deletes the pod again with ``gracePeriodSeconds: 0``. An unbound or terminal pod's
  period is 0 (pkg/registry/core/pod/strategy.go CheckGracefulDelete);
* a later DELETE may shorten the period, never lengthen it;
* an object whose finalizers go away during an update is removed only once its grace period is 0
  (ShouldDeleteDuringUpdate);
* ``pods/binding`` sets ``spec.nodeName`` (once) and the ``PodScheduled`` condition;
* ``pods/eviction`` adds ``DisruptionTarget`` (reason ``EvictionByEvictionAPI``) to a running pod, then
  deletes it with the eviction's DeleteOptions.
"""

from __future__ import annotations

import datetime
from typing import Any

from finetune_operator.local.semantics import ApiError, JsonDict, ResourceDef, now_rfc3339

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
DEFAULT_TERMINATION_GRACE_SECONDS = 30
TERMINAL_PHASES = ("Succeeded", "Failed")
EVICTION_REASON = "EvictionByEvictionAPI"
EVICTION_MESSAGE = "Eviction API: evicting"


def is_pod(rdef: ResourceDef) -> bool:
    return rdef.group == "" and rdef.plural == "pods"


def is_terminal(pod: JsonDict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def grace_period(rdef: ResourceDef, obj: JsonDict, options: JsonDict) -> int:
    """Seconds the deletion of ``obj`` waits for its kubelet (0 for anything but a bound, live pod)."""
    if not is_pod(rdef):
        return 0
    requested: Any = options.get("gracePeriodSeconds")
    if requested is None:
        requested = (obj.get("spec") or {}).get("terminationGracePeriodSeconds")
    if requested is None:
        requested = DEFAULT_TERMINATION_GRACE_SECONDS
    try:
        period = max(0, int(requested))
    except (TypeError, ValueError):
        raise ApiError.bad_request(f"invalid gracePeriodSeconds: {requested!r}") from None
    if not (obj.get("spec") or {}).get("nodeName") or is_terminal(obj):
        return 0
    return period


def deletion_timestamp(period: int) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=period)
    return now_rfc3339(moment)


def set_condition(status: JsonDict, cond: JsonDict) -> None:
    """Replace the condition of ``cond['type']`` (keeping its lastTransitionTime if the status is the same)."""
    conds = list(status.get("conditions") or [])
    for i, old in enumerate(conds):
        if old.get("type") == cond["type"]:
            if old.get("status") == cond.get("status") and old.get("lastTransitionTime"):
                cond = {**cond, "lastTransitionTime": old["lastTransitionTime"]}
            conds[i] = cond
            break
    else:
        conds.append(cond)
    status["conditions"] = conds


def bind(rdef: ResourceDef, pod: JsonDict, binding: Any) -> JsonDict:
    """The pod (a private copy) bound to the Binding's target node."""
    if not isinstance(binding, dict):
        raise ApiError.bad_request("the body of the request was not a JSON object")
    target = binding.get("target") or {}
    node = target.get("name")
    name = pod["metadata"]["name"]
    if not node or target.get("kind", "Node") != "Node":
        raise ApiError.invalid(rdef, name, "target: Required value: a Node to bind the pod to")
    current = (pod.get("spec") or {}).get("nodeName")
    if current:
        raise ApiError.conflict(rdef, name, f'pod {name} is already assigned to node "{current}"')
    if pod["metadata"].get("deletionTimestamp"):
        raise ApiError.conflict(rdef, name, f"pod {name} is being deleted, cannot be assigned to a host")
    pod.setdefault("spec", {})["nodeName"] = str(node)
    status = pod.setdefault("status", {})
    set_condition(
        status,
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339(),
        },
    )
    return pod


def disruption_condition(reason: str = EVICTION_REASON, message: str = EVICTION_MESSAGE) -> JsonDict:
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
    }


def eviction_delete_options(eviction: Any) -> JsonDict:
    """The DeleteOptions of a policy/v1 Eviction body (checked: it must be an Eviction)."""
    if not isinstance(eviction, dict):
        raise ApiError.bad_request("the body of the request was not a JSON object")
    kind = eviction.get("kind")
    if kind not in (None, "Eviction"):
        raise ApiError.bad_request(f"expected an Eviction, got {kind!r}")
    options = eviction.get("deleteOptions") or {}
    if not isinstance(options, dict):
        raise ApiError.bad_request("deleteOptions must be an object")
    return dict(options)


def eviction_success() -> JsonDict:
    """What the real server answers to an accepted eviction (201 Created)."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
