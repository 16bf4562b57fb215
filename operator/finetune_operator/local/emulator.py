"""An emulated kube-apiserver on loopback: kmock's KubernetesEmulator plus real API-server semantics.

kmock provides the HTTP server, the API discovery documents and the Status-shaped errors for
unknown endpoints; the object semantics (resourceVersions, generation, status subresource,
finalizers, selectors, watches with replay, patches) live in :mod:`finetune_operator.local.store`.

    async with Emulator(crds=[...]) as emu:
        kopf_login -> kopf.ConnectionInfo(server=emu.url, insecure=True)
        emu.store.get("finetunejobs", "default", "x")
        emu.history  # every committed write, in order
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp.web
import kmock

from finetune_operator.local import openapi
from finetune_operator.local.admission import field_validation, warning_header
from finetune_operator.local.pods import is_pod
from finetune_operator.local.routing import ParsedPath, load_crds, parse_path
from finetune_operator.local.semantics import (
    ALL_VERBS,
    STATUS_VERBS,
    ApiError,
    JsonDict,
    ResourceDef,
    Selector,
)
from finetune_operator.local.store import MERGE_PATCH, HistoryRecord, ObjectStore
from finetune_operator.local.watching import stream_events

POD_CREATE_SUBRESOURCES = ("binding", "eviction")  # POST-only subresources of pods
# the real server's answer to a request without valid credentials (authentication fails before authorization)
UNAUTHORIZED: JsonDict = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}

__all__ = ["ApiError", "Emulator", "HistoryRecord", "ObjectStore", "ParsedPath", "load_crds", "parse_path"]


class _Handler(kmock.KubernetesEmulator):
    """kmock's emulator with resource URLs routed to the semantic store."""

    def __init__(self, api: Emulator, keep_requests: bool) -> None:
        super().__init__()
        self._api = api
        self._keep_requests = keep_requests

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if not self._api.authenticated(raw_request):
            return _json(UNAUTHORIZED, status=401)
        if raw_request.path.rstrip("/").startswith("/openapi/v3"):
            return self._api.serve_openapi(raw_request.path)
        parsed = parse_path(raw_request.path)
        if parsed is None:
            response: aiohttp.web.StreamResponse = await super().__call__(raw_request)
            if not self._keep_requests:
                self._requests.clear()
            return response
        await raw_request.read()
        return await self._api.serve_http(raw_request, parsed)

    async def _serve_version(self, request: Any) -> Any:
        """kmock's APIResourceList, with the core groupVersion and the subresources' verbs fixed."""
        result: Any = await super()._serve_version(request)
        result["groupVersion"] = result["groupVersion"].lstrip("/")
        for entry in result.get("resources", []):
            if "/" in entry["name"] and entry["name"].endswith(POD_CREATE_SUBRESOURCES):
                entry["verbs"] = ["create"]
            elif "/" in entry["name"]:
                entry["verbs"] = sorted(STATUS_VERBS)
            else:
                entry["verbs"] = sorted(entry["verbs"])
        return result


def _json(data: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )


class Emulator:
    """An in-memory kube-apiserver over HTTP on 127.0.0.1 (a free port unless given).

    :param crds: CRD manifests (dicts) to install at start (they are created as objects too).
    :param controllers: start the garbage collector and the Job controller with the server.
    :param watch_cache_size: how many recent events a watch can replay by resourceVersion.
    :param auto_namespaces: create namespaces implicitly on first use (else 404 like the real server).
    :param keep_history: record every write in ``emu.history`` (tests); off for long-running local mode.
    :param keep_requests: keep kmock's log of non-resource requests (``emu.kmock.requests``).
    :param seed: seed of the random names (generateName, job pods), for determinism.
    :param tokens: bearer tokens the server accepts; when given, an HTTP request without one of them gets
        401 Unauthorized, as from a real server's token authenticator (default: no authentication).
        ``emu.bearer_tokens`` records the tokens that requests presented.
    """

    def __init__(
        self,
        *,
        crds: Iterable[JsonDict] = (),
        controllers: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
        watch_cache_size: int = 10_000,
        auto_namespaces: bool = True,
        keep_history: bool = True,
        keep_requests: bool = True,
        seed: int | None = None,
        tokens: Iterable[str] | None = None,
    ) -> None:
        self.tokens = frozenset(tokens) if tokens is not None else None
        self.bearer_tokens: builtins.list[str] = []
        self.kmock: Any = _Handler(self, keep_requests)
        self.store = ObjectStore(
            watch_cache_size=watch_cache_size,
            auto_namespaces=auto_namespaces,
            keep_history=keep_history,
            seed=seed,
        )
        self.store.on_register.append(self._publish)
        self.store.on_unregister.append(self._unpublish)
        for rdef in self.store.resources:
            self._publish(rdef)
        for crd in crds:
            self.store.create(
                self.store.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, crd
            )
        self._host = host
        self._port = port
        self._server: Any = None
        self._with_controllers = controllers
        self._controllers: builtins.list[Any] = []
        self._streams: set[asyncio.Task[Any]] = set()
        self.warnings: builtins.list[str] = []  # every Warning header sent: "METHOD /path: text"

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.kmock.__aenter__()
        self._server = kmock.Server(self.kmock, host=self._host, port=self._port)
        await self._server.__aenter__()
        if self._with_controllers:
            from finetune_operator.local.controllers import JobController
            from finetune_operator.local.gc import GarbageCollector
            from finetune_operator.local.kubelet import NodeAgent

            self._controllers = [GarbageCollector(self), JobController(self), NodeAgent(self)]
            for controller in self._controllers:
                await controller.start()

    async def stop(self) -> None:
        for controller in reversed(self._controllers):
            await controller.stop()
        self._controllers = []
        self.store.close_watchers()
        if self._streams:  # let the streams see the closure and finish their responses
            await asyncio.wait(set(self._streams), timeout=2)
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
            self._server = None
            await self.kmock.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("The emulator is not started.")
        return str(self._server.url).rstrip("/")

    @property
    def history(self) -> builtins.list[HistoryRecord]:
        return self.store.history

    def kubeconfig(self, namespace: str = "default") -> JsonDict:
        """A kubeconfig document pointing at this emulator (for clients that want one)."""
        cluster = {"server": self.url, "insecure-skip-tls-verify": True}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "emulator", "user": {"token": "emulator"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }

    def _publish(self, rdef: ResourceDef) -> None:
        self.kmock.resources[kmock.resource(rdef.group, rdef.version, rdef.plural)] = kmock.ResourceInfo(
            namespaced=rdef.namespaced,
            kind=rdef.kind,
            singular=rdef.singular,
            verbs=set(ALL_VERBS),
            shortnames=set(rdef.short_names),
            categories=set(rdef.categories),
            subresources=({"status"} if rdef.status_subresource else set())
            | (set(POD_CREATE_SUBRESOURCES) if is_pod(rdef) else set()),
        )

    def authenticated(self, request: aiohttp.web.BaseRequest) -> bool:
        """Bearer-token authentication, when the emulator was given tokens."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        bearer = scheme.lower() == "bearer" and bool(token)
        if bearer and (not self.bearer_tokens or self.bearer_tokens[-1] != token):
            self.bearer_tokens.append(token)
        return self.tokens is None or (bearer and token in self.tokens)

    def _unpublish(self, rdef: ResourceDef) -> None:
        """A deleted CRD's resource leaves API discovery."""
        self.kmock.resources.pop(kmock.resource(rdef.group, rdef.version, rdef.plural), None)

    def serve_openapi(self, path: str) -> aiohttp.web.Response:
        """``/openapi/v3`` and ``/openapi/v3/apis/<group>/<version>`` (``/openapi/v3/api/v1``)."""
        status, body = openapi.serve(path, self.store.resources, self.store.list("customresourcedefinitions"))
        return _json(body, status)

    # --- one code path for HTTP and for in-process callers ---------------------------------------

    def execute(
        self,
        method: str,
        rdef: ResourceDef,
        namespace: str | None,
        name: str | None,
        *,
        subresource: str | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = MERGE_PATCH,
        warnings: builtins.list[str] | None = None,
    ) -> tuple[int, JsonDict]:
        """Perform one non-watch API call; returns (HTTP status, body). Raises :class:`ApiError`.

        ``warnings`` collects what the server would send as ``Warning`` headers (fieldValidation Warn)."""
        params = params or {}
        if rdef.namespaced is False and namespace is not None:
            raise ApiError.no_resource()
        if subresource in POD_CREATE_SUBRESOURCES and is_pod(rdef) and name is not None:
            if method != "POST":
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource: {method}",
                )
            if subresource == "binding":
                return 201, self.store.bind(rdef, namespace, name, body)
            return 201, self.store.evict(rdef, namespace, name, body)
        if subresource not in (None, "status") or (subresource and not rdef.status_subresource):
            raise ApiError.no_resource()
        dry_run = params.get("dryRun")
        if dry_run not in (None, "", "All"):
            raise ApiError.bad_request(f'dryRun: Unsupported value: "{dry_run}": supported values: "All"')
        if dry_run == "All" and method != "GET":
            with self.store.dry_run():
                return self.execute(
                    method,
                    rdef,
                    namespace,
                    name,
                    subresource=subresource,
                    body=body,
                    params={k: v for k, v in params.items() if k != "dryRun"},
                    content_type=content_type,
                    warnings=warnings,
                )
        labels, fields = params.get("labelSelector"), params.get("fieldSelector")
        if method == "GET":
            if name is None:
                return 200, self.store.list_collection(rdef, namespace, labels, fields)
            return 200, self.store.fetch(rdef, namespace, name)
        if method in ("POST", "PUT", "PATCH"):
            mode = field_validation(params)
        if method == "POST" and name is None:
            return 201, self.store.create(rdef, namespace, body, field_validation=mode, warnings=warnings)
        if method == "PUT" and name is not None:
            return 200, self.store.replace(
                rdef, namespace, name, body, subresource, field_validation=mode, warnings=warnings
            )
        if method == "PATCH" and name is not None:
            return 200, self.store.patch(
                rdef,
                namespace,
                name,
                body,
                content_type=content_type,
                subresource=subresource,
                field_validation=mode,
                warnings=warnings,
            )
        if method == "DELETE":
            options = dict(body) if isinstance(body, dict) else {}
            if "propagationPolicy" in params:
                options["propagationPolicy"] = params["propagationPolicy"]
            if "gracePeriodSeconds" in params:
                options["gracePeriodSeconds"] = params["gracePeriodSeconds"]
            if name is None:
                return 200, self.store.delete_collection(rdef, namespace, labels, fields, options)
            obj, gone = self.store.delete(rdef, namespace, name, options)
            # 202 only for a pending deletion that asked orphanDependents: false (the apiserver's delete
            # handler); a graceful or finalizer-held deletion answers 200 with the object
            return (202 if not gone and options.get("orphanDependents") is False else 200), obj
        raise ApiError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested resource: {method}",
        )

    async def serve_http(
        self, raw: aiohttp.web.BaseRequest, parsed: ParsedPath
    ) -> aiohttp.web.StreamResponse:
        try:
            rdef = self.store.resolve(parsed.group, parsed.version, parsed.plural)
            params = dict(raw.query)
            if raw.method == "GET" and params.get("watch") in ("true", "1"):
                return await self._serve_watch(raw, rdef, parsed, params)
            text = await raw.text()
            try:
                body = json.loads(text) if text.strip() else None
            except ValueError:
                raise ApiError.bad_request("the body of the request is not valid JSON") from None
            content_type = raw.headers.get("Content-Type", MERGE_PATCH)
            warnings: builtins.list[str] = []
            status, data = self.execute(
                raw.method,
                rdef,
                parsed.namespace,
                parsed.name,
                subresource=parsed.subresource,
                body=body,
                params=params,
                content_type=content_type,
                warnings=warnings,
            )
            response = _json(data, status)
            for text in warnings:
                response.headers.add("Warning", warning_header(text))
                self.warnings.append(f"{raw.method} {raw.path}: {text}")
            return response
        except ApiError as exc:
            return _json(exc.status(), exc.code)

    async def _serve_watch(
        self, raw: aiohttp.web.BaseRequest, rdef: ResourceDef, parsed: ParsedPath, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        fields = params.get("fieldSelector")
        if parsed.name is not None:
            fields = ",".join(filter(None, [fields, f"metadata.name={parsed.name}"]))
        selector = Selector.parse(parsed.namespace, params.get("labelSelector"), fields)
        watcher = self.store.watch(rdef, selector, params.get("resourceVersion"))
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            return await stream_events(raw, watcher, timeout)
        finally:
            self.store.unwatch(watcher)
            if task is not None:
                self._streams.discard(task)

    # --- coroutine helpers (the same code path as HTTP) ------------------------------------------

    def _rdef_of(self, obj: JsonDict) -> ResourceDef:
        return self.store.for_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))

    async def create(self, obj: JsonDict, *, namespace: str | None = None) -> JsonDict:
        """Create from a full manifest (apiVersion/kind/metadata)."""
        rdef = self._rdef_of(obj)
        ns = (namespace or obj.get("metadata", {}).get("namespace") or "default") if rdef.namespaced else None
        return self.execute("POST", rdef, ns, None, body=obj)[1]

    async def get(self, resource: str, namespace: str | None, name: str) -> JsonDict:
        rdef = self.store.find(resource)
        return self.execute("GET", rdef, namespace, name)[1]

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[JsonDict]:
        params = {
            k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v
        }
        items: builtins.list[JsonDict] = self.execute(
            "GET", self.store.find(resource), namespace, None, params=params
        )[1]["items"]
        return items

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> JsonDict:
        rdef = self.store.find(resource)
        return self.execute(
            "PATCH", rdef, namespace, name, subresource=subresource, body=patch, content_type=content_type
        )[1]

    async def replace(self, obj: JsonDict, *, subresource: str | None = None) -> JsonDict:
        rdef = self._rdef_of(obj)
        meta = obj.get("metadata", {})
        ns = meta.get("namespace") if rdef.namespaced else None
        return self.execute("PUT", rdef, ns, meta.get("name"), subresource=subresource, body=obj)[1]

    async def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> JsonDict:
        params = {"propagationPolicy": propagation_policy} if propagation_policy else {}
        if grace_period_seconds is not None:
            params["gracePeriodSeconds"] = str(grace_period_seconds)
        return self.execute("DELETE", self.store.find(resource), namespace, name, params=params)[1]

    async def evict(self, namespace: str, name: str, *, grace_period_seconds: int | None = None) -> JsonDict:
        """POST pods/{name}/eviction (policy/v1), as ``kubectl drain`` does."""
        body: JsonDict = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        return self.execute(
            "POST", self.store.find("pods"), namespace, name, subresource="eviction", body=body
        )[1]
