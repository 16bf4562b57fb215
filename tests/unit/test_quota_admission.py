"""The pure admission core: ordering, strict FIFO, multiple quotas, never-fits, rolling token budgets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from finetune_operator.api import parse_quota
from finetune_operator.quota import (
    REASON_EXCEEDS_QUOTA,
    REASON_QUOTA_EXCEEDED,
    AdmissionResult,
    JobView,
    Snapshot,
    Verdict,
    decide,
    quota_view,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)
GPU = "nvidia.com/gpu"


def job(
    name: str,
    *,
    ns: str = "team-a",
    gpus: int = 1,
    prio: int = 0,
    t: int = 0,
    admitted: bool = False,
    resource: str = GPU,
    **kw: Any,
) -> JobView:
    return JobView(
        uid=f"{ns}/{name}",
        namespace=ns,
        name=name,
        created=T0 + timedelta(seconds=t),
        priority=prio,
        admitted=admitted,
        gpus={resource: gpus} if gpus else {},
        **kw,
    )


def hosted(
    name: str,
    *,
    ns: str = "team-a",
    provider: str = "openai",
    t: int = 0,
    tokens: int = 0,
    done_at: datetime | None = None,
    admitted: bool = False,
    **kw: Any,
) -> JobView:
    return JobView(
        uid=f"{ns}/{name}",
        namespace=ns,
        name=name,
        created=T0 + timedelta(seconds=t),
        hosted_provider=provider,
        trained_tokens=tokens,
        token_time=done_at,
        finished=done_at is not None,
        admitted=admitted or done_at is not None,
        **kw,
    )


def quota(name: str, limits: dict[str, Any], selector: dict[str, Any] | None = None) -> Any:
    return parse_quota(
        {
            "metadata": {"name": name, "generation": 1},
            "spec": {"namespaceSelector": selector or {}, "limits": limits},
        }
    )


NAMESPACES = {"team-a": {"team": "a"}, "team-b": {"team": "b"}, "other": {}}


def run(jobs: Sequence[JobView], quotas: Sequence[Any], now: datetime = T0) -> AdmissionResult:
    views = [quota_view(q, NAMESPACES, [j.namespace for j in jobs]) for q in quotas]
    return decide(Snapshot(jobs=list(jobs), quotas=views, now=now))


def admitted(result: AdmissionResult) -> list[str]:
    return sorted(d.name for d in result.decisions.values() if d.admitted)


def newly(result: AdmissionResult) -> list[str]:
    return sorted(d.name for d in result.newly_admitted)


GPU4 = {"gpus": [{"resourceName": GPU, "count": 4}]}


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        # creation order when priorities are equal
        ([job("c", t=3, gpus=2), job("a", t=1, gpus=2), job("b", t=2, gpus=2)], ["a", "b"]),
        # priority first, then creation time
        (
            [job("old", t=0, gpus=2), job("vip", t=9, gpus=2, prio=100), job("mid", t=5, gpus=2, prio=10)],
            ["mid", "vip"],
        ),
        # same priority and time: by name
        ([job("z", gpus=2), job("y", gpus=2), job("x", gpus=2)], ["x", "y"]),
        # strict FIFO: the 1-GPU job must not jump the blocked 3-GPU job
        ([job("one", t=0, gpus=2), job("three", t=1, gpus=3), job("small", t=2, gpus=1)], ["one"]),
        # already admitted jobs hold capacity and are not re-decided
        ([job("run", gpus=3, admitted=True), job("next", t=1, gpus=2)], ["run"]),
        # CPU-only in-cluster jobs need no GPUs
        ([job("big", gpus=4), job("cpu", t=1, gpus=0)], ["big", "cpu"]),
    ],
)
def test_gpu_ordering(jobs: list[JobView], expected: list[str]) -> None:
    assert admitted(run(jobs, [quota("team", GPU4)])) == expected


def test_queued_decision_names_quota_and_limit() -> None:
    result = run(
        [job("a", gpus=4, admitted=True), job("b", t=1, gpus=2), job("c", t=2, gpus=1)],
        [quota("team-a", GPU4)],
    )
    b, c = result.decisions["team-a/b"], result.decisions["team-a/c"]
    assert (b.verdict, b.reason, b.queue_position) == (Verdict.QUEUED, REASON_QUOTA_EXCEEDED, 1)
    assert b.message == "TrainingQuota team-a: nvidia.com/gpu 4/4 in use, job needs 2"
    assert c.queue_position == 2
    assert c.message == "TrainingQuota team-a: nvidia.com/gpu 4/4 in use, job needs 1"
    assert result.quotas["team-a"].queued == ("team-a/b", "team-a/c")


def test_head_of_line_message_names_the_blocker() -> None:
    result = run(
        [job("a", gpus=2, admitted=True), job("b", t=1, gpus=3), job("c", t=2, gpus=1)], [quota("q", GPU4)]
    )
    c = result.decisions["team-a/c"]
    assert c.queued
    assert (
        c.message
        == "TrainingQuota q: nvidia.com/gpu has room, but team-a/b is ahead in the queue (strict FIFO)"
    )


def test_blocked_gpu_job_does_not_hold_back_hosted_jobs() -> None:
    limits = {**GPU4, "maxJobs": 10, "hostedTokens": [{"provider": "any", "tokens": 1000, "window": "24h"}]}
    result = run(
        [job("a", gpus=4, admitted=True), job("b", t=1, gpus=1), hosted("h", t=2)], [quota("q", limits)]
    )
    assert admitted(result) == ["a", "h"]


def test_max_jobs_blocks_everyone() -> None:
    result = run(
        [job("a", gpus=1, admitted=True), job("b", t=1, gpus=1), hosted("h", t=2)],
        [quota("q", {"maxJobs": 1})],
    )
    assert admitted(result) == ["a"]
    assert result.decisions["team-a/b"].message == "TrainingQuota q: jobs 1/1 admitted"


@pytest.mark.parametrize(
    ("limits", "the_job", "message"),
    [
        (GPU4, job("huge", gpus=8), "TrainingQuota q: job needs 8 nvidia.com/gpu but the limit is 4"),
        ({"maxJobs": 0}, job("any", gpus=1), "TrainingQuota q: maxJobs is 0"),
        (
            {"hostedTokens": [{"provider": "openai", "tokens": 0}]},
            hosted("h"),
            "TrainingQuota q: the hosted token budget tokens openai/24h is 0",
        ),
        (
            {"gpuHours": [{"resourceName": GPU, "hours": 0}]},
            job("g"),
            "TrainingQuota q: the GPU-hour budget gpu-hours nvidia.com/gpu/24h is 0",
        ),
    ],
)
def test_never_fits_is_rejected(limits: dict[str, Any], the_job: JobView, message: str) -> None:
    result = run([the_job], [quota("q", limits)])
    decision = result.decisions[the_job.uid]
    assert (decision.verdict, decision.reason) == (Verdict.REJECTED, REASON_EXCEEDS_QUOTA)
    assert decision.message.startswith(message)
    assert decision.blocking == ("q",)


def test_never_fits_does_not_block_the_queue() -> None:
    result = run([job("huge", gpus=8), job("ok", t=1, gpus=1)], [quota("q", GPU4)])
    assert admitted(result) == ["ok"]
    assert result.decisions["team-a/huge"].rejected


def test_gpu_limits_are_per_resource_name() -> None:
    limits = {"gpus": [{"resourceName": GPU, "count": 1}, {"resourceName": "amd.com/gpu", "count": 2}]}
    jobs = [job("n1", gpus=1), job("n2", t=1, gpus=1), job("a1", t=2, gpus=2, resource="amd.com/gpu")]
    result = run(jobs, [quota("q", limits)])
    assert admitted(result) == ["a1", "n1"]


def test_namespace_selector() -> None:
    q = quota("only-a", {"gpus": [{"resourceName": GPU, "count": 1}]}, {"matchLabels": {"team": "a"}})
    result = run(
        [
            job("a1", gpus=1),
            job("a2", t=1, gpus=1),
            job("b1", ns="team-b", gpus=1),
            job("b2", ns="team-b", t=1, gpus=1),
        ],
        [q],
    )
    assert admitted(result) == ["a1", "b1", "b2"]
    assert result.decisions["team-b/b1"].quotas == ()
    assert result.decisions["team-b/b1"].message == "no TrainingQuota covers this namespace"


def test_selector_by_namespace_name_label() -> None:
    q = quota(
        "by-name",
        {"maxJobs": 0},
        {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["other"]}]},
    )
    result = run([job("x", ns="other"), job("y", ns="team-a")], [q])
    assert result.decisions["other/x"].rejected
    assert result.decisions["team-a/y"].admitted


def test_every_covering_quota_must_have_room() -> None:
    team = quota("team-a", {"gpus": [{"resourceName": GPU, "count": 4}]}, {"matchLabels": {"team": "a"}})
    cluster = quota("cluster", {"gpus": [{"resourceName": GPU, "count": 3}]})
    jobs = [job("a1", gpus=2), job("a2", t=1, gpus=2), job("b1", ns="team-b", t=2, gpus=1)]
    result = run(jobs, [team, cluster])
    # a2 fits team-a (2+2<=4) but not cluster (2+2>3); it blocks the cluster queue for b1 too (strict FIFO)
    assert admitted(result) == ["a1"]
    a2 = result.decisions["team-a/a2"]
    assert a2.blocking == ("cluster",)
    assert a2.message == "TrainingQuota cluster: nvidia.com/gpu 2/3 in use, job needs 2"
    assert result.decisions["team-b/b1"].blocking == ("cluster",)
    assert result.quotas["team-a"].usage[0].used == 2
    assert result.quotas["cluster"].queued == ("team-a/a2", "team-b/b1")


def test_blocked_in_team_quota_leaves_cluster_quota_open() -> None:
    team = quota("team-a", {"gpus": [{"resourceName": GPU, "count": 2}]}, {"matchLabels": {"team": "a"}})
    cluster = quota("cluster", {"gpus": [{"resourceName": GPU, "count": 8}]})
    jobs = [job("a1", gpus=2, admitted=True), job("a2", t=1, gpus=1), job("b1", ns="team-b", t=2, gpus=4)]
    result = run(jobs, [team, cluster])
    assert admitted(result) == ["a1", "b1"]
    assert result.decisions["team-a/a2"].blocking == ("team-a",)


@pytest.mark.parametrize(
    ("state", "holds"),
    [
        ({"finished": True}, False),
        ({"suspended": True}, False),
        ({"deleting": True}, False),
        ({}, True),
    ],
)
def test_finished_suspended_deleted_free_capacity(state: dict[str, Any], holds: bool) -> None:
    result = run([job("old", gpus=4, admitted=True, **state), job("new", t=1, gpus=4)], [quota("q", GPU4)])
    assert result.decisions["team-a/new"].admitted is not holds
    assert result.quotas["q"].usage[0].used == 4


def test_suspended_admitted_job_is_released() -> None:
    result = run(
        [job("s", gpus=1, admitted=True, suspended=True), job("d", gpus=1, admitted=True, finished=True)],
        [quota("q", GPU4)],
    )
    assert result.releases == ("team-a/s",)


def test_quota_raised_admits_more() -> None:
    jobs = [job(f"j{i}", t=i, gpus=2) for i in range(5)]
    assert newly(run(jobs, [quota("q", GPU4)])) == ["j0", "j1"]
    raised = {"gpus": [{"resourceName": GPU, "count": 8}]}
    persisted = [
        j if j.name not in ("j0", "j1") else job(j.name, t=int(j.name[1]), gpus=2, admitted=True)
        for j in jobs
    ]
    assert newly(run(persisted, [quota("q", raised)])) == ["j2", "j3"]


def test_quota_lowered_keeps_running_jobs_and_reports_overuse() -> None:
    jobs = [job("a", gpus=3, admitted=True), job("b", t=1, gpus=1)]
    result = run(jobs, [quota("q", {"gpus": [{"resourceName": GPU, "count": 2}]})])
    assert admitted(result) == ["a"]
    assert result.quotas["q"].usage[0].render() == "nvidia.com/gpu 3/2"


def test_usage_is_recomputed_from_the_snapshot() -> None:
    q = quota("q", {"maxJobs": 5, **GPU4})
    jobs = [
        job("a", gpus=1, admitted=True),
        job("b", gpus=2, admitted=True, finished=True),
        job("c", gpus=1, admitted=True),
        job("d", t=1, gpus=1),
    ]
    usage = {u.key: u.used for u in run(jobs, [q]).quotas["q"].usage}
    assert usage == {"jobs": 3, "gpus/nvidia.com/gpu": 3}
    usage = {u.key: u.used for u in run(jobs[:2], [q]).quotas["q"].usage}
    assert usage == {"jobs": 1, "gpus/nvidia.com/gpu": 1}


def test_no_quota_admits_everything() -> None:
    assert admitted(run([job("a", gpus=64), job("b", gpus=64)], [])) == ["a", "b"]


def test_kueue_jobs_are_skipped_and_do_not_count() -> None:
    result = run([job("k", gpus=4, kueue=True, admitted=True), job("n", t=1, gpus=4)], [quota("q", GPU4)])
    assert result.decisions["team-a/k"].verdict == Verdict.SKIPPED
    assert result.decisions["team-a/n"].admitted


# --------------------------------------------------------------------------- rolling token budgets

BUDGET = {"hostedTokens": [{"provider": "any", "tokens": 1000, "window": "24h"}]}


def test_token_budget_blocks_until_the_window_rolls() -> None:
    done = T0 + timedelta(hours=1)
    jobs = [hosted("spent", tokens=1200, done_at=done), hosted("next", t=7200)]
    now = T0 + timedelta(hours=3)
    result = run(jobs, [quota("tokens", BUDGET)], now=now)
    decision = result.decisions["team-a/next"]
    assert decision.queued
    assert decision.message == (
        "TrainingQuota tokens: hosted tokens tokens any/24h 1200/1000 used; "
        "room again at 2025-01-02T01:00:00Z"
    )
    assert result.next_check == done + timedelta(hours=24)
    # one second before the old usage rolls out: still blocked; at the roll-out: admitted
    assert (
        run(jobs, [quota("tokens", BUDGET)], now=done + timedelta(hours=24, seconds=-1))
        .decisions["team-a/next"]
        .queued
    )
    assert (
        run(jobs, [quota("tokens", BUDGET)], now=done + timedelta(hours=24)).decisions["team-a/next"].admitted
    )


def test_token_budget_counts_running_jobs_now_and_by_provider() -> None:
    limits = {"hostedTokens": [{"provider": "openai", "tokens": 1000, "window": "30d"}]}
    running = hosted("run", tokens=1500, admitted=True)
    jobs = [running, hosted("g", provider="gradient", t=1), hosted("o", t=2)]
    result = run(jobs, [quota("q", limits)], now=T0 + timedelta(days=60))
    assert admitted(result) == ["g", "run"]
    assert result.decisions["team-a/o"].queued
    assert result.next_check is None  # a running job's tokens never roll out while it runs


def test_token_budget_below_limit_admits_and_in_cluster_jobs_ignore_it() -> None:
    jobs = [hosted("spent", tokens=999, done_at=T0), hosted("h", t=1), job("gpu", t=2, gpus=1)]
    assert admitted(run(jobs, [quota("q", BUDGET)], now=T0 + timedelta(hours=1))) == ["gpu", "h"]


def test_gpu_hours_budget() -> None:
    limits = {"gpuHours": [{"resourceName": GPU, "hours": 10, "window": "24h"}]}
    now = T0 + timedelta(hours=30)
    used = job(
        "used",
        gpus=2,
        admitted=True,
        finished=True,
        run_start=now - timedelta(hours=8),
        run_end=now - timedelta(hours=2),
    )  # 12 GPU-hours in the window
    old = job("old", gpus=4, admitted=True, finished=True, run_start=T0, run_end=T0 + timedelta(hours=5))
    result = run([used, old, job("new", t=1)], [quota("q", limits)], now=now)
    assert result.decisions["team-a/new"].queued
    assert result.quotas["q"].usage[0].used == pytest.approx(12.0)
    assert result.next_check == now + timedelta(seconds=60)
