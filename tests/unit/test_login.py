"""The operator's login goes through the `kubernetes` package: client certificates and OIDC id-tokens from a
kubeconfig end up in the credentials kopf and the operator's client use (exec plugins: the integration test)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import kopf
import pytest
import yaml

from finetune_operator.config import Settings
from finetune_operator.kube import Connection
from finetune_operator.login import connection_info

pytestmark = pytest.mark.unit

CA = b"-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\na2V5\n-----END PRIVATE KEY-----\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: dict[str, object]) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://k8s.example:6443", "certificate-authority-data": _b64(CA)},
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_client_certificate_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _kubeconfig(
        tmp_path,
        monkeypatch,
        {"client-certificate-data": _b64(CERT), "client-key-data": _b64(KEY)},
    )
    info = connection_info(Settings(api_server=None), kopf.OperatorSettings())
    assert info is not None and info.server == "https://k8s.example:6443" and not info.insecure
    conn = Connection.from_kopf(info)
    assert conn.certificate_path and Path(conn.certificate_path).read_bytes() == CERT
    assert conn.private_key_path and Path(conn.private_key_path).read_bytes() == KEY
    assert conn.ca_path and Path(conn.ca_path).read_bytes() == CA
    assert conn.token is None


def test_oidc_auth_provider_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    id_token = ".".join(
        (part({"alg": "RS256"}), part({"iss": "https://idp.example", "exp": int(time.time()) + 3600}), "sig")
    )
    _kubeconfig(
        tmp_path,
        monkeypatch,
        {
            "auth-provider": {
                "name": "oidc",
                "config": {
                    "client-id": "k8s",
                    "id-token": id_token,
                    "idp-issuer-url": "https://idp.example",
                    "refresh-token": "r",
                },
            }
        },
    )
    info = connection_info(Settings(api_server=None), kopf.OperatorSettings())
    assert info is not None and info.token == id_token and (info.scheme or "Bearer") == "Bearer"


def test_api_server_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    info = connection_info(
        Settings(api_server="http://127.0.0.1:1", api_insecure=True), kopf.OperatorSettings()
    )
    assert info is not None and info.server == "http://127.0.0.1:1" and info.token is None
