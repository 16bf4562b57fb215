"""The example TrainingQuotas validate, and a quota's status renders usage against limits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from finetune_operator.api import parse_quota
from finetune_operator.quota import JobView, Snapshot, decide, quota_status, quota_view, status_changed

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "quotas").glob("*.yaml"))
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    quota = parse_quota(yaml.safe_load(path.read_text()))
    assert quota.metadata.name
    assert quota.spec.limits.model_dump(exclude_none=True)


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"team-gpu-quota.yaml", "hosted-token-budget.yaml"}


def test_quota_status_summary_and_condition() -> None:
    quota = parse_quota(yaml.safe_load((EXAMPLES[-1].parent / "team-gpu-quota.yaml").read_text()))
    jobs = [
        JobView(uid=f"u{i}", namespace="nlp", name=f"j{i}", created=NOW, gpus={"nvidia.com/gpu": 3})
        for i in range(4)
    ]
    view = quota_view(quota, {"nlp": {"team": "nlp"}})
    result = decide(Snapshot(jobs=jobs, quotas=[view], now=NOW))
    status = quota_status(quota, result, NOW)
    assert status.usage_summary == "jobs 2/6, nvidia.com/gpu 6/8, gpu-hours nvidia.com/gpu/7d 0/500"
    assert (status.admitted_jobs, status.queued_jobs) == (2, 2)
    ready = status.conditions[0] if status.conditions else None
    assert ready is not None and ready.type == "Ready" and ready.status == "True"
    assert ready.message == "2 job(s) queued"
    assert [u.name for u in status.usage or []] == [
        "jobs",
        "gpus/nvidia.com/gpu",
        "gpuHours/nvidia.com/gpu/7d",
    ]
    assert not status_changed(status, quota_status(quota.model_copy(update={"status": status}), result, NOW))
