"""Every status field the code writes is in the CRD's status schema.

A real API server prunes, without an error, any field outside the schema (fieldValidation=Warn is the default
of the operator's and the trainer's clients), so a field missing from the schema would silently never reach
`kubectl get`. The bodies here come from the code itself: the operator's derive_status / status_patch for
representative observations (in-cluster and hosted; queued, running, suspended, succeeded, failed), the
trainer's StatusSink patches (sent over HTTP by the real sink, fed by the real Reporter), the status derived
from a trainer result, and the quota controller's TrainingQuota status. Each is validated as a status
subresource write in Warn mode: nothing may be pruned, and nothing refused.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from openai.types.fine_tuning import FineTuningJob
from tests.unit.test_quota_admission import hosted, quota, run
from tests.unit.test_quota_admission import job as quota_job
from tests.unit.test_status import RESULT, T0, TABLE, att, make_job
from tests.unit.test_trainer_config import ADAPTER_SPEC, _job, _result, _status_from_pod

from finetune_operator.api import SpecError, parse_job
from finetune_operator.api.crdgen import finetunejob_crd, trainingquota_crd
from finetune_operator.api.jobstatus import MetricsStatus, RetrievalMetrics
from finetune_operator.api.trainerconfig import JobRef, ReportSpec
from finetune_operator.backends.base import Observation
from finetune_operator.backends.openai_backend import _metrics_progress, _observation
from finetune_operator.builders.trainerconfig import build_trainer_config
from finetune_operator.config import Settings
from finetune_operator.local.crdvalidation import ValidationResult, validate
from finetune_operator.quota import quota_status
from finetune_operator.status import AttemptObservation, Observed, derive_status, status_patch
from finetune_trainer.context import Eta
from finetune_trainer.engine_adapter import AdapterRunner
from finetune_trainer.output import write_result
from finetune_trainer.progress import Reporter, StatusSink

pytestmark = pytest.mark.unit

JOB_CRD = finetunejob_crd()
QUOTA_CRD = trainingquota_crd()


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _write_status(crd: dict[str, Any], obj: dict[str, Any], status: dict[str, Any]) -> ValidationResult:
    old = copy.deepcopy(obj)
    new = copy.deepcopy(obj)
    new["status"] = status
    return validate(crd, new, old=old, field_validation="Warn", subresource="status")


def assert_in_schema(
    status: dict[str, Any], crd: dict[str, Any] = JOB_CRD, obj: dict[str, Any] | None = None
) -> None:
    body = obj if obj is not None else make_job().model_dump(by_alias=True, exclude_none=True, mode="json")
    body.pop("status", None)
    result = _write_status(crd, body, status)
    assert result.warnings == [], f"the server would prune: {result.warnings}"
    assert result.errors == [], f"the server would refuse: {result.errors}"
    assert result.obj["status"] == status


# ---------------------------------------------------------------------------- operator: derive_status


@pytest.mark.parametrize(("case", "obs", "phase", "reason"), TABLE, ids=[t[0] for t in TABLE])
def test_derived_status_is_in_the_schema(case: str, obs: Observed, phase: str, reason: str) -> None:
    trainer_progress = {"step": 3, "totalSteps": 10, "percent": 30, "summary": "3/10 (30%)", "stage": "train"}
    obs = Observed(**{**obs.__dict__, "admitted_by": ("team-a", "cluster")} if obs.admitted else obs.__dict__)
    status = derive_status(make_job(), obs, T0 + timedelta(minutes=5))
    assert status["phase"] == phase
    assert_in_schema(status)
    with_progress = Observed(**{**obs.__dict__, "trainer_progress": trainer_progress})
    assert_in_schema(derive_status(make_job(), with_progress, T0 + timedelta(minutes=5)))


def test_invalid_spec_status_is_in_the_schema() -> None:
    body = make_job().model_dump(by_alias=True, exclude_none=True, mode="json")
    body["spec"]["engine"] = {"adapter": {"epochs": 0}}
    with pytest.raises(SpecError) as info:
        parse_job(body)
    status = derive_status(body, Observed(spec_error=info.value), T0)
    assert status["phase"] == "Failed"
    assert_in_schema(status)


def test_succeeded_status_with_metrics_model_checkpoints_and_dataset() -> None:
    ckpts = [{"step": s, "uri": f"pvc://models/out/ns/demo/checkpoints/checkpoint-{s}"} for s in (10, 20)]
    obs = Observed(
        admitted=True,
        admitted_by=("team-a",),
        attempts=(att(1, "succeeded", T0, T0 + timedelta(minutes=3), result=RESULT, checkpoints=ckpts),),
    )
    status = derive_status(make_job(), obs, T0 + timedelta(minutes=4))
    assert status["metrics"]["mrrAt10Change"] == "0.400→0.600"
    assert {"metrics", "model", "dataset", "checkpoints", "completionTime"} <= set(status)
    assert_in_schema(status)


def test_status_patches_keep_the_status_in_the_schema() -> None:
    """The merge patches the operator sends, applied in turn as the server does (nulls delete)."""
    current: dict[str, Any] = {}
    for _case, obs, _phase, _reason in TABLE:
        new = derive_status(make_job(status=current or None), obs, T0 + timedelta(minutes=5))
        patch = status_patch(current, new)
        if patch is None:
            continue
        current = _merge(current, patch)
        assert_in_schema(current)


def test_result_derived_status_is_in_the_schema(tmp_path: Path) -> None:
    """The trainer's result JSON -> termination message -> in-cluster observation -> derive_status."""
    job = _job(ADAPTER_SPEC)
    cfg = build_trainer_config(job, Settings(), attempt=1).model_copy(
        update={"result_path": str(tmp_path / "termination-log"), "output_dir": str(tmp_path / "out")}
    )
    write_result(cfg, None, _result(cfg))
    status = _status_from_pod(job, (tmp_path / "termination-log").read_text())
    assert status["metrics"]["after"]["mrrAt10"] == 1.0 and "→" in status["metrics"]["mrrAt10Change"]
    assert_in_schema(status, obj=job.model_dump(by_alias=True, exclude_none=True, mode="json"))


# ---------------------------------------------------------------------------- operator: hosted engines


def _openai_job() -> dict[str, Any]:
    body = make_job().model_dump(by_alias=True, exclude_none=True, mode="json")
    body["spec"] = {
        "engine": {"openai": {"apiKeySecretRef": {"name": "openai", "key": "apiKey"}}},
        "dataset": {"train": {"url": "https://example.com/train.jsonl"}},
    }
    return body


def _remote(status: str, **kw: Any) -> FineTuningJob:
    data: dict[str, Any] = {
        "id": "ftjob-abc123",
        "object": "fine_tuning.job",
        "created_at": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "organization_id": "org-1",
        "status": status,
        "hyperparameters": {"n_epochs": 3},
        "result_files": [],
        "seed": 42,
        "training_file": "file-1",
        "validation_file": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "error": None,
        "trained_tokens": None,
    }
    data.update(kw)
    return FineTuningJob.model_validate(data)


@pytest.mark.parametrize(
    "remote",
    [
        _remote("validating_files"),
        _remote("running"),
        _remote(
            "succeeded",
            fine_tuned_model="ft:gpt-4o-mini-2024-07-18:org:demo:abc123",
            finished_at=1_764_000_600,
            trained_tokens=123456,
        ),
        _remote(
            "failed",
            finished_at=1_764_000_600,
            error={"code": "invalid_training_file", "message": "line 3: bad role", "param": None},
        ),
        _remote("cancelled", finished_at=1_764_000_600),
    ],
    ids=lambda r: r.status,
)
def test_hosted_status_is_in_the_schema(remote: FineTuningJob) -> None:
    body = _openai_job()
    job = parse_job(body)
    assert job.spec.engine.openai is not None
    obs = _observation(remote, job.spec.engine.openai)
    progress = {
        **(obs.progress or {}),
        **_metrics_progress({"step": 40, "total_steps": 90, "train_loss": 0.7}),
    }
    checkpoints = [
        {
            "step": 30,
            "modelId": "ft:gpt-4o-mini:org:demo:abc123:ckpt-step-30",
            "loss": 0.8,
            "time": "2026-11-24T16:05:00Z",
        }
    ]
    obs = Observation(**{**obs.__dict__, "progress": progress, "checkpoints": checkpoints})
    status = derive_status(job, Observed(admitted=True, attempts=(AttemptObservation(1, obs),)), T0)
    assert status["remoteJobId"] == "ftjob-abc123"
    assert_in_schema(status, obj=body)


# ---------------------------------------------------------------------------- trainer: StatusSink


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            assert self.headers["Content-Type"] == "application/merge-patch+json"
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_trainer_status_patches_are_in_the_schema(
    status_server: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, bodies = status_server
    sink = StatusSink(ReportSpec(api_server=url, interval_seconds=0), JobRef(namespace="ns", name="demo"))
    reporter = Reporter([sink], interval_seconds=0)
    sent = 0

    def delivered() -> None:  # the sink sends only the newest queued report: wait for each one
        nonlocal sent
        sent += 1
        deadline = time.monotonic() + 10
        while len(bodies) < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(bodies) == sent

    # the stage reports of steps.py, then the adapter engine's training reports with its checkpoints
    for stage in ("data", "load model", "evaluate"):
        reporter.report({"step": 0, "stage": stage}, force=True)
        delivered()
    eta = Eta(0)
    checkpoints: list[dict[str, Any]] = []
    for step in (10, 20, 30):
        entry = {
            "step": step,
            "uri": f"checkpoints/checkpoint-{step}",
            "time": "2026-11-24T16:05:00Z",
            "loss": 0.5,
        }
        checkpoints.append(entry)
        reporter.report(AdapterRunner._progress(step, 30, 10, 0.5, eta), list(checkpoints), force=True)
    reporter.report(
        {"step": 30, "total_steps": 30, "stage": "done", "loss": 0.4, "eta_seconds": 0},
        checkpoints,
        force=True,
    )
    reporter.close()
    delivered()
    current = derive_status(make_job(), Observed(admitted=True, attempts=(att(1, "running", T0),)), T0)
    for body in bodies:
        assert set(body) == {"status"}
        current = _merge(current, body["status"])
        assert_in_schema(current)
    assert current["checkpoints"]["latest"]["step"] == 30 and current["progress"]["stage"] == "done"


# ---------------------------------------------------------------------------- quota controller


def test_quota_status_is_in_the_schema() -> None:
    quotas = [
        quota(
            "team-a",
            {"maxJobs": 2, "gpus": [{"resourceName": "nvidia.com/gpu", "count": 2}]},
            {"matchLabels": {"team": "a"}},
        ),
        quota(
            "tokens",
            {
                "hostedTokens": [{"provider": "openai", "tokens": 1000, "window": "24h"}],
                "gpuHours": [{"hours": 10}],
            },
        ),
    ]
    jobs = [
        quota_job("a", gpus=2),
        quota_job("b", gpus=1, t=1),
        hosted("h", tokens=500, done_at=datetime(2025, 1, 1, tzinfo=UTC)),
    ]
    result = run(jobs, quotas)
    for q in quotas:
        status = quota_status(q, result, T0).to_json()
        assert status["usageSummary"]
        body = q.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert_in_schema(status, crd=QUOTA_CRD, obj=body)


# ---------------------------------------------------------------------------- the MRR@10 column


def test_mrr_column_is_a_short_before_after_string() -> None:
    column = next(
        c for c in JOB_CRD["spec"]["versions"][0]["additionalPrinterColumns"] if c["name"] == "MRR@10"
    )
    assert column == {
        "name": "MRR@10",
        "type": "string",
        "jsonPath": ".status.metrics.mrrAt10Change",
        "priority": 1,
    }
    m = MetricsStatus(
        before=RetrievalMetrics(mrr_at10=0.6481481481481481),
        after=RetrievalMetrics(mrr_at10=0.8252777777777777),
    )
    assert m.with_mrr_change().mrr_at10_change == "0.648→0.825"
    assert MetricsStatus(after=RetrievalMetrics(mrr_at10=0.5)).with_mrr_change().mrr_at10_change == "0.500"
    assert MetricsStatus(before=RetrievalMetrics(mrr_at10=0.5)).with_mrr_change().mrr_at10_change is None
