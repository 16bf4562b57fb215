"""How the operator logs in to the API server: through the `kubernetes` package, so any kubeconfig works.

* `settings.api_server` set (local mode, tests): that URL, no credentials.
* Otherwise kopf piggybacks on the official client (`kopf.login_via_client`): in a pod, the ServiceAccount;
  outside, the kubeconfig (`$KUBECONFIG` or `~/.kube/config`, its current context) with everything the
  client supports: exec credential plugins (EKS `aws eks get-token`, GKE `gke-gcloud-auth-plugin`, AKS
  `kubelogin`), OIDC auth-providers, client certificates, tokens, basic auth.
* Without the `kubernetes` package (or when it finds no configuration): kopf's minimal service-account and
  kubeconfig readers (static tokens and certificates only).

Tokens that expire (exec plugins, OIDC) are fetched again on a 401: kopf re-runs the login handler for its
own requests, and the operator's KubeClient calls `relogin` (set as `KubeClient.reauthenticate`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from .config import Settings
from .kube import Connection

log = logging.getLogger(__name__)


def connection_info(settings: Settings, kopf_settings: Any, logger: Any = log) -> kopf.ConnectionInfo | None:
    """The credentials for the API server (blocking: an exec plugin runs a command)."""
    if settings.api_server:
        return kopf.ConnectionInfo(server=settings.api_server, insecure=settings.api_insecure or None)
    _follow_kubeconfig_env()
    try:
        info = kopf.login_via_client(logger=logger, settings=kopf_settings)
    except kopf.LoginError as exc:
        logger.warning("the kubernetes client found no configuration (%s); trying kopf's own readers", exc)
        info = None
    if info is not None:
        return info
    return kopf.login_with_service_account(settings=kopf_settings) or kopf.login_with_kubeconfig(
        settings=kopf_settings
    )


def _follow_kubeconfig_env() -> None:
    """The `kubernetes` package reads $KUBECONFIG once, when it is imported: look at it at each login."""
    try:
        from kubernetes.config import kube_config
    except ImportError:
        return
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ.get("KUBECONFIG", "~/.kube/config")


async def login(settings: Settings, kopf_settings: Any, logger: Any = log) -> kopf.ConnectionInfo | None:
    """`connection_info` off the event loop (an exec plugin may take seconds)."""
    return await asyncio.to_thread(connection_info, settings, kopf_settings, logger)


def relogin(settings: Settings, kopf_settings: Any) -> Any:
    """A `KubeClient.reauthenticate` callback: log in again, as a Connection."""

    async def again() -> Connection | None:
        info = await login(settings, kopf_settings)
        return Connection.from_kopf(info) if info is not None else None

    return again
