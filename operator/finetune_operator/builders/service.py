"""The headless Service of a multi-pod attempt, and the torchrun command line of its pods.

The documented Kubernetes pattern for a Job whose pods talk to each other: an Indexed Job, whose pods get
the hostname `<job>-<index>`, and a headless Service (`clusterIP: None`) that the pods name as their
`subdomain`, so every pod has the DNS name `<job>-<index>.<service>`. Rank 0's pod (index 0) hosts
torchrun's c10d rendezvous store at `<job>-0.<service>:RDZV_PORT`. `publishNotReadyAddresses` makes the
names resolve as soon as the pods exist (the trainer has no readiness probe, and the rendezvous happens
before any could pass).

Pure: plain dicts, no I/O.
"""

from __future__ import annotations

from typing import Any

from ..api.finetunejob import FinetuneJob
from ..naming import attempt_labels, trainer_job_name, trainer_service_name
from .common import child_metadata

RDZV_PORT = 29400  # torchrun's default c10d rendezvous port
LAUNCHER_MODULE = "finetune_trainer.distributed"  # torchrun's own main, keeping the workers' exit code
SHUTDOWN_MARGIN_SECONDS = 10  # of the pod's grace period: torchrun's SIGTERM -> SIGKILL wait is shorter


def multi_pod(job: FinetuneJob) -> bool:
    """Whether the attempt runs as several pods (an Indexed Job with a headless Service)."""
    placement = job.spec.placement
    return placement.nodes > 1 or placement.elastic is not None


def rank0_host(job: FinetuneJob, attempt: int) -> str:
    """The DNS name of the pod with completion index 0: `<job>-0.<service>`."""
    name = job.metadata.name
    return f"{trainer_job_name(name, attempt)}-0.{trainer_service_name(name, attempt)}"


def build_service(job: FinetuneJob, attempt: int) -> dict[str, Any]:
    """The headless Service of attempt `attempt`, selecting its pods by job name, uid and attempt."""
    name = job.metadata.name
    labels = attempt_labels(name, job.metadata.uid, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(job, trainer_service_name(name, attempt), labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": dict(labels),
            "ports": [{"name": "rendezvous", "port": RDZV_PORT, "targetPort": RDZV_PORT, "protocol": "TCP"}],
        },
    }


def torchrun_args(job: FinetuneJob, attempt: int, grace_seconds: int) -> list[str]:
    """torchrun's arguments (before `-m finetune_trainer --config ...`).

    Several pods: `--nnodes=N` (or `MIN:N` when elastic), one process per GPU, c10d rendezvous on pod 0,
    `--node-rank` from the Job controller's JOB_COMPLETION_INDEX (the kubelet expands `$(VAR)` in args).
    Static jobs get `--max-restarts=0`: any failure ends the attempt and the operator starts the next one
    from the newest checkpoint; elastic jobs let torchrun restart the workers (from that checkpoint too)
    when a pod comes or goes, up to runPolicy.backoffLimit times. One pod with several GPUs: standalone.
    """
    placement = job.spec.placement
    nproc = placement.procs_per_node
    shutdown = max(1, grace_seconds - SHUTDOWN_MARGIN_SECONDS)
    if not multi_pod(job):
        return ["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", f"--shutdown-timeout={shutdown}"]
    elastic = placement.elastic
    nnodes = f"{elastic.min_nodes}:{elastic.max_nodes}" if elastic is not None else str(placement.nodes)
    restarts = job.spec.run_policy.backoff_limit if elastic is not None else 0
    return [
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rank0_host(job, attempt)}:{RDZV_PORT}",
        f"--rdzv-id={trainer_job_name(job.metadata.name, attempt)}",
        f"--max-restarts={restarts}",
        f"--shutdown-timeout={shutdown}",
    ]
