"""A small async REST client for the Kubernetes API (aiohttp), built from kopf's login credentials.

Only what the operator needs: get / list / create / patch (merge or JSON patch) / delete / patch_status,
plus `create_if_absent` (409 -> read the existing object). Errors are typed (`NotFound`, `Conflict`, ...).
Every call is recorded in `client.calls` as a `Call` (verb, group, resource, subresource, namespaced), so
tests can compare what the operator really does with the RBAC rules of the Helm chart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

JsonDict = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# plural -> (group, version, namespaced). Extended at run time with `register`.
_BUILTIN: dict[str, tuple[str, str, bool]] = {
    "pods": ("", "v1", True),
    "configmaps": ("", "v1", True),
    "secrets": ("", "v1", True),
    "serviceaccounts": ("", "v1", True),
    "services": ("", "v1", True),
    "events": ("", "v1", True),
    "namespaces": ("", "v1", False),
    "persistentvolumeclaims": ("", "v1", True),
    "jobs": ("batch", "v1", True),
    "roles": ("rbac.authorization.k8s.io", "v1", True),
    "rolebindings": ("rbac.authorization.k8s.io", "v1", True),
    "leases": ("coordination.k8s.io", "v1", True),
    "finetunejobs": ("finetune.dev", "v1alpha1", True),
    "trainingquotas": ("finetune.dev", "v1alpha1", False),
}


class ApiError(Exception):
    """An error answer of the API server."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409 (already exists, or a stale resourceVersion)."""


class Invalid(ApiError):
    """422 (the object or a JSON-patch test is invalid)."""


class Forbidden(ApiError):
    """401 / 403."""


def _error(code: int, body: Any, text: str) -> ApiError:
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    message = str(body.get("message", text)) if isinstance(body, dict) else text
    cls: type[ApiError] = {404: NotFound, 409: Conflict, 422: Invalid, 401: Forbidden, 403: Forbidden}.get(
        code, ApiError
    )
    return cls(code, reason or "Unknown", message[:500])


@dataclass(frozen=True, order=True)
class Call:
    """One kind of API call, as an RBAC rule sees it."""

    verb: str  # get, list, create, patch, delete, update
    group: str
    resource: str
    subresource: str
    namespaced: bool


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the API server (a subset of kopf.ConnectionInfo)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: str | bytes | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    certificate_path: str | None = None
    certificate_data: str | bytes | None = None
    private_key_path: str | None = None
    private_key_data: str | bytes | None = None
    scheme: str | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        """From a kopf.ConnectionInfo (duck-typed so this module does not import kopf)."""

        def _path(value: Any) -> str | None:
            return None if value is None else str(value)

        return cls(
            server=str(info.server),
            token=info.token,
            ca_path=_path(info.ca_path),
            ca_data=info.ca_data,
            insecure=bool(info.insecure),
            username=info.username,
            password=info.password,
            certificate_path=_path(info.certificate_path),
            certificate_data=info.certificate_data,
            private_key_path=_path(info.private_key_path),
            private_key_data=info.private_key_data,
            scheme=info.scheme,
        )


def _b64_or_text(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return raw


def _ssl_context(conn: Connection) -> ssl.SSLContext | bool:
    if not conn.server.startswith("https"):
        return False
    if conn.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif conn.ca_path or conn.ca_data:
        cadata = _b64_or_text(conn.ca_data).decode() if conn.ca_data else None
        ctx = ssl.create_default_context(cafile=conn.ca_path, cadata=cadata)
    else:
        ctx = ssl.create_default_context()
    cert, key = conn.certificate_path, conn.private_key_path
    with tempfile.TemporaryDirectory() as tmp:
        if conn.certificate_data and not cert:
            cert = str(Path(tmp) / "cert.pem")
            Path(cert).write_bytes(_b64_or_text(conn.certificate_data))
        if conn.private_key_data and not key:
            key = str(Path(tmp) / "key.pem")
            Path(key).write_bytes(_b64_or_text(conn.private_key_data))
        if cert:
            ctx.load_cert_chain(cert, key)
    return ctx


class KubeClient:
    """Async Kubernetes REST client. Create with a Connection, or `configure()` it later (kopf login)."""

    def __init__(self, conn: Connection | None = None, *, timeout: float = 30.0) -> None:
        self.calls: set[Call] = set()
        self.request_count = 0
        self._conn = conn
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ready = asyncio.Event()
        self._resources = dict(_BUILTIN)
        # called on a 401 (an expired exec-plugin/OIDC token): a fresh login; the request is retried once
        self.reauthenticate: Callable[[], Awaitable[Connection | None]] | None = None
        if conn is not None:
            self._ready.set()

    # --- lifecycle -------------------------------------------------------------------------------

    def configure(self, conn: Connection) -> None:
        """(Re)point the client at a connection (called from kopf's login handler)."""
        if conn != self._conn:
            old = self._session
            self._session = None
            if old is not None:
                asyncio.get_running_loop().create_task(old.close())
        self._conn = conn
        self._ready.set()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_session(self) -> tuple[aiohttp.ClientSession, Connection]:
        await self._ready.wait()
        conn = self._conn
        assert conn is not None
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "finetune-operator"}
            if conn.token:
                headers["Authorization"] = f"{conn.scheme or 'Bearer'} {conn.token}"
            auth = aiohttp.BasicAuth(conn.username, conn.password or "") if conn.username else None
            self._session = aiohttp.ClientSession(
                headers=headers,
                auth=auth,
                connector=aiohttp.TCPConnector(ssl=_ssl_context(conn), limit=64),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session, conn

    # --- addressing ------------------------------------------------------------------------------

    def register(self, resource: str, group: str, version: str, namespaced: bool) -> None:
        self._resources[resource] = (group, version, namespaced)

    def _url(
        self, server: str, resource: str, namespace: str | None, name: str | None, sub: str | None
    ) -> str:
        group, version, namespaced = self._resources[resource]
        base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        if namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{resource}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return server.rstrip("/") + base

    def _record(self, verb: str, resource: str, sub: str | None) -> None:
        group, _, namespaced = self._resources[resource]
        self.calls.add(Call(verb, group, resource, sub or "", namespaced))
        self.request_count += 1

    async def request(
        self,
        method: str,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        *,
        subresource: str | None = None,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        if resource not in self._resources:
            raise KeyError(f"unknown resource {resource!r}")
        self._record(verb, resource, subresource)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        for retry in (False, True):
            session, conn = await self._get_session()
            url = self._url(conn.server, resource, namespace, name, subresource)
            async with session.request(method, url, data=data, headers=headers, params=params) as resp:
                text = await resp.text()
                try:
                    payload = json.loads(text) if text else {}
                except ValueError:
                    payload = {}
                if resp.status == 401 and not retry and await self._relogin(conn):
                    continue
                if resp.status >= 400:
                    raise _error(resp.status, payload, text)
                return payload if isinstance(payload, dict) else {}
        raise AssertionError("unreachable")

    async def _relogin(self, failed: Connection) -> bool:
        """After a 401: log in again (the credentials may have expired); whether there is a new connection."""
        if self.reauthenticate is None:
            return False
        if self._conn != failed:  # another request has logged in again meanwhile
            return True
        conn = await self.reauthenticate()
        if conn is None or conn == failed:
            return False
        self.configure(conn)
        return True

    async def served_resources(self, api_version: str) -> set[str] | None:
        """The resource names API discovery lists for `api_version` ("group/version"); None if the server
        does not serve that version (a 404: e.g. its CRDs are not installed). Discovery needs no RBAC."""
        session, conn = await self._get_session()
        url = f"{conn.server.rstrip('/')}/apis/{api_version}"
        async with session.get(url) as resp:
            if resp.status == 404:
                return None
            text = await resp.text()
            if resp.status >= 400:
                raise _error(resp.status, {}, text)
            data = json.loads(text) if text else {}
        return {str(r.get("name")) for r in data.get("resources") or [] if isinstance(r, dict)}

    # --- verbs -----------------------------------------------------------------------------------

    async def get(self, resource: str, namespace: str | None, name: str) -> JsonDict:
        return await self.request("GET", "get", resource, namespace, name)

    async def get_or_none(self, resource: str, namespace: str | None, name: str) -> JsonDict | None:
        try:
            return await self.get(resource, namespace, name)
        except NotFound:
            return None

    async def list(
        self, resource: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[JsonDict]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self.request("GET", "list", resource, namespace, params=params)
        items: list[JsonDict] = data.get("items") or []
        return items

    async def create(self, resource: str, namespace: str | None, body: JsonDict) -> JsonDict:
        return await self.request("POST", "create", resource, namespace, body=body)

    async def create_if_absent(self, resource: str, namespace: str | None, body: JsonDict) -> JsonDict:
        """Create, or return the existing object of that name (409 AlreadyExists -> get)."""
        try:
            return await self.create(resource, namespace, body)
        except Conflict:
            return await self.get(resource, namespace, str(body["metadata"]["name"]))

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        kind: Literal["merge", "json"] = "merge",
        subresource: str | None = None,
    ) -> JsonDict:
        ctype = MERGE_PATCH if kind == "merge" else JSON_PATCH
        return await self.request(
            "PATCH",
            "patch",
            resource,
            namespace,
            name,
            subresource=subresource,
            body=patch,
            content_type=ctype,
        )

    async def patch_status(
        self, resource: str, namespace: str | None, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge-patch the status subresource."""
        return await self.patch(resource, namespace, name, {"status": status}, subresource="status")

    async def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = "Background",
        grace_period_seconds: int | None = None,
        missing_ok: bool = True,
    ) -> JsonDict | None:
        body: JsonDict = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            return await self.request("DELETE", "delete", resource, namespace, name, body=body)
        except NotFound:
            if missing_ok:
                return None
            raise
