"""The emulator's Job controller on Indexed Jobs: per-index pods (annotation, label, env, hostname), completion
once every index succeeded, backoffLimitPerIndex / maxFailedIndexes / FailIndex, and the local kubelet's
`$(VAR)` expansion and rendezvous rewrite."""

from __future__ import annotations

import pytest
from emulator_support import eventually, job, job_condition, pods_of

from finetune_operator.local.emulator import Emulator
from finetune_operator.local.indexed import INDEX_ANNOTATION, intervals
from finetune_operator.local.kubelet import FakeKubelet
from finetune_operator.local.podnet import LocalRendezvous, expand_vars, field_value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


def indexed(name: str, n: int = 2, **spec: object) -> dict[str, object]:
    body = job(name, completionMode="Indexed", completions=n, parallelism=n, **spec)
    body["spec"]["template"]["spec"]["subdomain"] = name  # type: ignore[index]
    return body


def _index(pod: dict[str, object]) -> int:
    return int(pod["metadata"]["annotations"][INDEX_ANNOTATION])  # type: ignore[index]


async def test_indexed_pods_complete_when_every_index_succeeded(emu: Emulator) -> None:
    await emu.create(indexed("ix"))
    pods = sorted(await pods_of(emu, "ix", count=2), key=_index)
    assert [_index(p) for p in pods] == [0, 1]
    for i, pod in enumerate(pods):
        assert pod["metadata"]["name"].startswith(f"ix-{i}-")
        assert pod["metadata"]["labels"][INDEX_ANNOTATION] == str(i)
        assert pod["spec"]["hostname"] == f"ix-{i}" and pod["spec"]["subdomain"] == "ix"
        (env,) = [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
        assert field_value(pod, env["valueFrom"]["fieldRef"]["fieldPath"]) == str(i)
    kubelet = FakeKubelet(emu)
    for pod in pods:
        await kubelet.run(pod)
    await kubelet.succeed(pods[1])

    async def one_done() -> bool:
        status = (emu.store.get("jobs", "default", "ix") or {}).get("status") or {}
        return status.get("completedIndexes") == "1" and status.get("succeeded") == 1

    await eventually(one_done)
    assert not any(
        c["type"] == "Complete"
        for c in (emu.store.get("jobs", "default", "ix") or {})["status"].get("conditions", [])
    )
    await kubelet.succeed(pods[0])
    done = await job_condition(emu, "ix", "Complete")
    assert done["status"]["completedIndexes"] == "0-1" and done["status"]["succeeded"] == 2


async def test_failed_index_beyond_max_failed_indexes_fails_the_job(emu: Emulator) -> None:
    await emu.create(indexed("gang", backoffLimitPerIndex=0, maxFailedIndexes=0))
    pods = sorted(await pods_of(emu, "gang", count=2), key=_index)
    kubelet = FakeKubelet(emu)
    await kubelet.run(pods[0])
    await kubelet.fail(pods[1], exit_code=1)
    failed = await job_condition(emu, "gang", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "MaxFailedIndexesExceeded" and failed["status"]["failedIndexes"] == "1"
    assert await kubelet.pods("default", label_selector="job-name=gang", phase="Pending") == []


async def test_backoff_limit_per_index_retries_the_index_with_its_failure_count(emu: Emulator) -> None:
    await emu.create(indexed("retry", n=1, backoffLimitPerIndex=1))
    kubelet = FakeKubelet(emu)
    (first,) = await pods_of(emu, "retry")
    assert first["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "0"
    await kubelet.fail(first, exit_code=1)

    async def second() -> list[dict[str, object]]:
        pods = await kubelet.pods("default", label_selector="job-name=retry", phase="Pending")
        return [p for p in pods if p["metadata"]["name"] != first["metadata"]["name"]]

    (again,) = await eventually(second)
    assert _index(again) == 0
    assert again["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "1"
    await kubelet.fail(again, exit_code=1)
    failed = await job_condition(emu, "retry", "Failed")
    assert (
        next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["reason"] == "FailedIndexes"
    )


async def test_fail_index_rule_and_ignored_disruption(emu: Emulator) -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}},
        ]
    }
    await emu.create(indexed("pol", backoffLimitPerIndex=5, podFailurePolicy=policy))
    kubelet = FakeKubelet(emu)
    pods = sorted(await pods_of(emu, "pol", count=2), key=_index)
    await kubelet.evict(pods[0])  # ignored: index 0 gets a new pod, no failure counted

    async def replaced() -> list[dict[str, object]]:
        fresh = await kubelet.pods("default", label_selector="job-name=pol", phase="Pending")
        return [p for p in fresh if _index(p) == 0 and p["metadata"]["name"] != pods[0]["metadata"]["name"]]

    (zero,) = await eventually(replaced)
    assert zero["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "0"
    await kubelet.fail(pods[1], exit_code=42)  # FailIndex: index 1 fails at once, not retried
    await kubelet.succeed(zero)
    failed = await job_condition(emu, "pol", "Failed")
    assert failed["status"]["failedIndexes"] == "1" and failed["status"]["completedIndexes"] == "0"


def test_var_expansion_and_local_rendezvous() -> None:
    env = {"JOB_COMPLETION_INDEX": "1"}
    assert expand_vars("--node-rank=$(JOB_COMPLETION_INDEX)", env) == "--node-rank=1"
    assert expand_vars("$$(JOB_COMPLETION_INDEX) $(UNSET)", env) == "$(JOB_COMPLETION_INDEX) $(UNSET)"
    rdzv = LocalRendezvous()
    a = rdzv.rewrite(["--rdzv-endpoint=j-a1-0.j-a1:29400", "-m", "x"], "j-a1-0")
    assert a[0].startswith("--rdzv-endpoint=127.0.0.1:") and a[1:] == ["--rdzv-conf=is_host=true", "-m", "x"]
    # pod 1 of the same job: the same port, and it does not host the c10d store (its name is not the host)
    b = rdzv.rewrite(["--rdzv-endpoint=j-a1-0.j-a1:29400", "--rdzv-conf=timeout=60", "-m", "x"], "j-a1-1")
    assert b == [a[0], "--rdzv-conf=timeout=60,is_host=false", "-m", "x"]
    assert rdzv.rewrite(["--rdzv-endpoint=k-a1-0.k-a1:29400"], "k-a1-0")[0] != a[0]
    assert intervals({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"


async def test_suspended_indexed_job_starts_all_its_pods_on_admission(emu: Emulator) -> None:
    """Kueue admits a Job as one Workload: suspended, no pod; unsuspended, every index at once."""
    import asyncio

    await emu.create(indexed("queued", suspend=True))
    await asyncio.sleep(0.2)
    assert await FakeKubelet(emu).pods("default", label_selector="job-name=queued") == []
    await emu.patch("jobs", "default", "queued", {"spec": {"suspend": False}})
    pods = await pods_of(emu, "queued", count=2)
    assert sorted(_index(p) for p in pods) == [0, 1]
