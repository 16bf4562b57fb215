"""A local Gradient API (aiohttp, 127.0.0.1, free port) with the paths and schemas of the `gradientai` SDK's
generated client (gradientai/openapi/client/api/models_api.py and models/*.py):

  GET    /api/models?onlyBase=true&capability=any  -> {"models": [BaseModel | ModelAdapter]}
  POST   /api/models   {"model": {"baseModelId", "name"}, "initialHyperparameters": {...}} -> {"id"}
  GET    /api/models/{id}                          -> {"baseModelId", "id", "latestUpdateTime", "name", "type"}
  POST   /api/models/{id}/fine-tune  {"samples": [{"inputs", "fineTuningParameters"?}]}
                                                   -> {"numberOfTrainableTokens", "sumLoss"}
  DELETE /api/models/{id}                          -> {}

Every request needs `Authorization: Bearer <token>` and `x-gradient-workspace-id`. Ids are 50 characters,
as the SDK's models require. Faults: `fail_next(route, status, times)`, a wrong token -> 401.

    python -m tests.fakes.fake_gradient --port 8012 --token T --workspace-id W   # for `finetune local` runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

BASE_MODELS = (("nous-hermes2", "Nous Hermes 2"), ("llama2-7b-chat", "Llama 2 7B Chat"))


def _id(suffix: str) -> str:
    out = f"{uuid.uuid4()}_{suffix}"
    assert len(out) == 50, out
    return out


@dataclass
class FakeGradient:
    token: str = "gradient-test-token"
    workspace_id: str = "ws-test"
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    fine_tune_calls: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    faults: list[list[Any]] = field(default_factory=list)  # [route, status, times]
    deleted: list[str] = field(default_factory=list)
    step_delay: float = 0.0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    async def __aenter__(self) -> FakeGradient:
        for slug, name in BASE_MODELS:
            mid = _id("base_ml_model")
            self.models[mid] = {
                "type": "baseModel",
                "id": mid,
                "name": name,
                "slug": slug,
                "capabilities": ["complete", "fineTune"],
            }
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/models", self._list)
        app.router.add_post("/api/models", self._create)
        app.router.add_get("/api/models/{id}", self._get)
        app.router.add_delete("/api/models/{id}", self._delete)
        app.router.add_post("/api/models/{id}/fine-tune", self._fine_tune)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, route: str, status: int, times: int = 1) -> None:
        self.faults.append([route, status, times])

    def adapters(self) -> list[dict[str, Any]]:
        return [m for m in self.models.values() if m["type"] == "modelAdapter"]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource is not None else request.path}"
        self.requests.append(
            (
                route,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
            )
        )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _err(401, "Unauthorized", "the access token is invalid or expired")
        if request.headers.get("x-gradient-workspace-id") != self.workspace_id:
            return _err(403, "Forbidden", "no access to this workspace")
        for fault in self.faults:
            if fault[2] > 0 and fault[0] in (route, "*"):
                fault[2] -= 1
                return _err(fault[1], "ServerError", "internal error")
        response: web.StreamResponse = await handler(request)
        return response

    async def _list(self, request: web.Request) -> web.Response:
        only_base = request.query.get("onlyBase", "").lower() == "true"  # the SDK sends True
        models = [m for m in self.models.values() if not only_base or m["type"] == "baseModel"]
        return web.json_response({"models": models})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body.get("model") or {}
        base = self.models.get(model.get("baseModelId", ""))
        if base is None or base["type"] != "baseModel" or not model.get("name"):
            return _err(
                400, "ValidationError", "model.baseModelId must name a base model and name is required"
            )
        mid = _id("model_adapter")
        self.models[mid] = {
            "type": "modelAdapter",
            "id": mid,
            "name": model["name"],
            "baseModelId": base["id"],
            "latestUpdateTime": _now(),
            "hyperparameters": body.get("initialHyperparameters"),
        }
        return web.json_response({"id": mid})

    def _adapter(self, request: web.Request) -> dict[str, Any] | None:
        model = self.models.get(request.match_info["id"])
        return model if model is not None and model["type"] == "modelAdapter" else None

    async def _get(self, request: web.Request) -> web.Response:
        model = self._adapter(request)
        if model is None:
            return _err(404, "NotFound", "model not found")
        keys = ("baseModelId", "id", "latestUpdateTime", "name", "type")
        return web.json_response({k: model[k] for k in keys})

    async def _delete(self, request: web.Request) -> web.Response:
        model = self._adapter(request)
        if model is None:
            return _err(404, "NotFound", "model not found")
        del self.models[model["id"]]
        self.deleted.append(model["id"])
        return web.json_response({})

    async def _fine_tune(self, request: web.Request) -> web.Response:
        import asyncio

        model = self._adapter(request)
        if model is None:
            return _err(404, "NotFound", "model not found")
        body = await request.json()
        samples = body.get("samples")
        if not isinstance(samples, list) or not samples:
            return _err(400, "ValidationError", "samples must be a non-empty list")
        if self.step_delay:
            await asyncio.sleep(self.step_delay)
        self.fine_tune_calls.append((model["id"], samples))
        tokens = sum(len(str(s.get("inputs", "")).split()) for s in samples)
        model["latestUpdateTime"] = _now()
        step = sum(1 for mid, _ in self.fine_tune_calls if mid == model["id"])
        return web.json_response({"numberOfTrainableTokens": tokens, "sumLoss": tokens * 2.0 / (1 + step)})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _err(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        status=status, content_type="application/json", text=json.dumps({"type": kind, "message": message})
    )


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeGradient(token=args.token, workspace_id=args.workspace_id, port=args.port) as fake:
        print(f"fake Gradient API listening on {fake.host}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fake_gradient",
        description="A fake Gradient models API (adapters, fine-tune steps) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8012, help="port to listen on (default 8012)")
    parser.add_argument(
        "--token",
        default="gradient-test-token",
        help="the bearer token to require (default gradient-test-token)",
    )
    parser.add_argument(
        "--workspace-id", default="ws-test", help="the x-gradient-workspace-id to require (default ws-test)"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
