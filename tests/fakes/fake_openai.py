"""A local OpenAI fine-tuning API (aiohttp, 127.0.0.1, free port) following the published REST shapes.

Routes: POST /v1/files (multipart), GET /v1/files/{id}, POST/GET /v1/fine_tuning/jobs (metadata[k]=v filter,
`data`/`has_more` pagination with `after` and `limit`), GET /v1/fine_tuning/jobs/{id}, GET .../events,
GET .../checkpoints, POST .../cancel.

A job advances validating_files -> queued -> running -> succeeded by one state per GET of the job
(`polls_per_state`), adding events, metrics and checkpoints. Fault injection: `fail_next(...)`
(any status, optional Retry-After, n times, per route), `wrong key -> 401`, `remote_failure`, and
`refuse_new_jobs` (the provider's own message). `created_jobs` counts creations (restart tests).

    python -m tests.fakes.fake_openai --port 8011 --api-key K   # for `finetune local` runs
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REFUSAL_MESSAGE = (
    "Fine-tuning is no longer available for new jobs on this account as of 2027-01-06. "
    "Existing fine-tuned models remain available for inference."
)
STATES = ("validating_files", "queued", "running", "succeeded")


@dataclass
class Fault:
    route: str  # e.g. "POST /v1/fine_tuning/jobs" or "GET /v1/fine_tuning/jobs/{id}" or "*"
    status: int
    times: int = 1
    retry_after: float | None = None
    message: str = "The server had an error while processing your request."


@dataclass
class RecordedRequest:
    method: str
    route: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None


@dataclass
class FakeOpenAI:
    """The fake server. Use `async with FakeOpenAI() as fake:` and point base_url at `fake.base_url`."""

    api_key: str = "test-key-not-real"
    polls_per_state: int = 1
    remote_failure: bool = False
    refuse_new_jobs: str | None = None
    training_steps: int = 30
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_contents: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    created_jobs: int = 0
    cancelled: list[str] = field(default_factory=list)
    _polls: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    port: int = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/v1/files", self._create_file)
        r.add_get("/v1/files/{id}", self._get_file)
        r.add_post("/v1/fine_tuning/jobs", self._create_job)
        r.add_get("/v1/fine_tuning/jobs", self._list_jobs)
        r.add_get("/v1/fine_tuning/jobs/{id}", self._get_job)
        r.add_get("/v1/fine_tuning/jobs/{id}/events", self._list_events)
        r.add_get("/v1/fine_tuning/jobs/{id}/checkpoints", self._list_checkpoints)
        r.add_post("/v1/fine_tuning/jobs/{id}/cancel", self._cancel)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = _bound_port(site)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(
        self,
        route: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str = "The server had an error while processing your request.",
    ) -> None:
        self.faults.append(Fault(route, status, times, retry_after, message))

    def calls(self, route: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        info = request.match_info.route.resource
        canonical = info.canonical if info is not None else request.path
        route = f"{request.method} {canonical}"
        body: Any = None
        if request.content_type == "application/json" and request.can_read_body:
            body = await request.json()
        self.requests.append(
            RecordedRequest(
                request.method,
                route,
                request.path,
                dict(request.query),
                {
                    k.lower(): v
                    for k, v in request.headers.items()
                    if k.lower() not in ("authorization", "api-key")
                },
                body,
            )
        )
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            given = auth.removeprefix("Bearer ")
            masked = given[:3] + "*" * 4 + given[-4:] if len(given) > 8 else "***"
            return _error(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_api_key",
            )
        for fault in self.faults:
            if fault.times > 0 and fault.route in (route, "*"):
                fault.times -= 1
                headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else None
                code = "rate_limit_exceeded" if fault.status == 429 else None
                return _error(fault.status, fault.message, code, headers=headers)
        response: web.StreamResponse = await handler(request)
        return response

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}abc"

    # ------------------------------------------------------------------ files

    async def _create_file(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, web.FileField):
            return _error(400, "'file' is a required property", param="file")
        if purpose != "fine-tune":
            return _error(400, f"Invalid purpose {purpose!r}", param="purpose")
        content = upload.file.read()
        fid = self._new_id("file")
        self.file_contents[fid] = content
        self.files[fid] = {
            "id": fid,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": upload.filename,
            "purpose": "fine-tune",
            "status": "processed",
        }
        return web.json_response(self.files[fid])

    async def _get_file(self, request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if fid not in self.files:
            return _error(404, f"No such File object: {fid}", param="id")
        return web.json_response(self.files[fid])

    # ------------------------------------------------------------------ jobs

    async def _create_job(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refuse_new_jobs is not None:
            return _error(403, self.refuse_new_jobs, "fine_tuning_unavailable")
        for key in ("model", "training_file"):
            if not body.get(key):
                return _error(400, f"Missing required parameter: '{key}'.", param=key)
        for key in ("training_file", "validation_file"):
            if body.get(key) and body[key] not in self.files:
                return _error(400, f"invalid {key}: {body[key]}", param=key)
        hp = ((body.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {}
        jid = self._new_id("ftjob")
        self.created_jobs += 1
        self.jobs[jid] = {
            "object": "fine_tuning.job",
            "id": jid,
            "model": body["model"],
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "trained_tokens": None,
            "error": None,
            "hyperparameters": {
                "n_epochs": hp.get("n_epochs", 3),
                "batch_size": hp.get("batch_size", 1),
                "learning_rate_multiplier": hp.get("learning_rate_multiplier", 1.8),
            },
            "seed": body.get("seed", 42),
            "suffix": body.get("suffix"),
            "metadata": body.get("metadata"),
            "method": body.get("method") or {"type": "supervised"},
            "estimated_finish": None,
            "integrations": [],
        }
        self.events[jid] = []
        self.checkpoints[jid] = []
        self._polls[jid] = 0
        self._event(jid, "info", f"Created fine-tuning job: {jid}")
        return web.json_response(self.jobs[jid])

    async def _list_jobs(self, request: web.Request) -> web.Response:
        wanted = {
            k[len("metadata[") : -1]: v
            for k, v in request.query.items()
            if k.startswith("metadata[") and k.endswith("]")
        }
        jobs = [
            j
            for j in sorted(self.jobs.values(), key=lambda j: j["id"], reverse=True)
            if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        return _page(jobs, request)

    async def _get_job(self, request: web.Request) -> web.Response:
        jid = request.match_info["id"]
        if jid not in self.jobs:
            return _error(404, f"Could not find fine tune job: {jid}", "fine_tune_job_not_found", param="id")
        self._advance(jid)
        return web.json_response(self.jobs[jid])

    async def _list_events(self, request: web.Request) -> web.Response:
        jid = request.match_info["id"]
        if jid not in self.jobs:
            return _error(404, f"Could not find fine tune job: {jid}", param="id")
        return _page(list(reversed(self.events[jid])), request)

    async def _list_checkpoints(self, request: web.Request) -> web.Response:
        jid = request.match_info["id"]
        if jid not in self.jobs:
            return _error(404, f"Could not find fine tune job: {jid}", param="id")
        return _page(list(reversed(self.checkpoints[jid])), request)

    async def _cancel(self, request: web.Request) -> web.Response:
        jid = request.match_info["id"]
        job = self.jobs.get(jid)
        if job is None:
            return _error(404, f"Could not find fine tune job: {jid}", param="id")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return _error(400, f"Job has already completed: {jid}", "invalid_request")
        job["status"] = "cancelled"
        job["finished_at"] = int(time.time())
        self.cancelled.append(jid)
        self._event(jid, "info", "Fine-tuning job cancelled")
        return web.json_response(job)

    # ------------------------------------------------------------------ simulation

    def _event(self, jid: str, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        evs = self.events[jid]
        evs.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{jid}-{len(evs) + 1:04d}",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "data": data or {},
                "type": "metrics" if data else "message",
            }
        )

    def _advance(self, jid: str) -> None:
        job = self.jobs[jid]
        if job["status"] not in STATES[:-1]:
            return
        self._polls[jid] += 1
        if self._polls[jid] < self.polls_per_state:
            return
        self._polls[jid] = 0
        nxt = STATES[STATES.index(job["status"]) + 1]
        if nxt == "running":
            job["status"] = "running"
            self._event(jid, "info", "Fine-tuning job started")
            half = self.training_steps // 2
            self._event(
                jid,
                "info",
                f"Step {half}/{self.training_steps}: training loss=0.9",
                {"step": half, "train_loss": 0.9, "total_steps": self.training_steps},
            )
        elif nxt == "succeeded" and self.remote_failure:
            job["status"] = "failed"
            job["finished_at"] = int(time.time())
            job["error"] = {
                "code": "invalid_training_file",
                "message": "The job failed due to an invalid training file.",
                "param": "training_file",
            }
            self._event(jid, "error", "The job failed due to an invalid training file.")
        elif nxt == "succeeded":
            n = self.training_steps
            model = f"ft:{job['model']}:{job.get('suffix') or 'personal'}:{jid}"
            for step in (n // 3, 2 * n // 3, n):
                self.checkpoints[jid].append(
                    {
                        "object": "fine_tuning.job.checkpoint",
                        "id": f"ftckpt-{jid}-{step}",
                        "created_at": int(time.time()),
                        "fine_tuning_job_id": jid,
                        "step_number": step,
                        "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{step}",
                        "metrics": {
                            "step": float(step),
                            "train_loss": round(1.5 - step / (n + 1), 4),
                            "train_mean_token_accuracy": 0.8,
                        },
                    }
                )
            self._event(
                jid,
                "info",
                f"Step {n}/{n}: training loss=0.5",
                {"step": n, "train_loss": 0.5, "total_steps": n},
            )
            job.update(
                status="succeeded",
                fine_tuned_model=model,
                finished_at=int(time.time()),
                trained_tokens=1234 * job["hyperparameters"]["n_epochs"],
            )
            self._event(jid, "info", f"New fine-tuned model created: {model}")
            self._event(jid, "info", "The job has successfully completed")
        else:
            job["status"] = nxt
            self._event(jid, "info", "Validated training file" if nxt == "queued" else f"Job is {nxt}")


def _bound_port(site: web.TCPSite) -> int:
    server: Any = site._server
    return int(server.sockets[0].getsockname()[1])


def _page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
    after = request.query.get("after")
    limit = int(request.query.get("limit", "20"))
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    data = items[:limit]
    return web.json_response({"object": "list", "data": data, "has_more": len(items) > limit})


def _error(
    status: int,
    message: str,
    code: str | None = None,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind = {401: "invalid_request_error", 429: "requests", 403: "invalid_request_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    return web.Response(
        status=status,
        headers=headers,
        content_type="application/json",
        text=json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeOpenAI(api_key=args.api_key, polls_per_state=args.polls_per_state, port=args.port) as fake:
        print(f"fake OpenAI fine-tuning API listening on {fake.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fake_openai",
        description="A fake OpenAI fine-tuning API (files, fine_tuning/jobs) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8011, help="port to listen on (default 8011)")
    parser.add_argument(
        "--api-key", default="test-key-not-real", help="the bearer key to require (default test-key-not-real)"
    )
    parser.add_argument(
        "--polls-per-state", type=int, default=1, help="GETs of a job per state change (default 1)"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
