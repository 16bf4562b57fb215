"""The Argo CD health check of FinetuneJob (docs/argocd-health.lua), run in a real Lua interpreter.

Argo CD runs health checks with gopher-lua (Lua 5.1 semantics), with the live object as the global `obj`
(null fields absent) and the script's return value as the health. lupa's Lua 5.1 runtime does the same
here, against the status fixtures in tests/fixtures/argocd/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "argocd-health.lua"
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "argocd").glob("*.json"))
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _runtime() -> Any:
    try:
        import lupa.lua51 as lua_module
    except ImportError:  # pragma: no cover - every lupa wheel ships Lua 5.1 today
        import lupa as lua_module
    return lua_module.LuaRuntime(unpack_returned_tuples=True)


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON -> Lua values like Argo CD does: objects and arrays become tables (arrays 1-based), null is absent."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for i, item in enumerate(value, start=1):
            table[i] = _to_lua(lua, item)
        return table
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = _runtime()
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(SCRIPT.read_text())
    return {"status": str(result["status"]), "message": str(result["message"] or "")}


def test_fixtures_cover_every_phase() -> None:
    phases = set()
    for path in FIXTURES:
        status = json.loads(path.read_text())["object"].get("status") or {}
        phases.add(status.get("phase"))
    assert {"Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended", None} <= phases


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_health_of_fixture(path: Path) -> None:
    fixture = json.loads(path.read_text())
    got = health(fixture["object"])
    assert got["status"] in ARGO_STATUSES
    assert got["status"] == fixture["expected"]["status"], f"{path.stem}: {fixture['description']}: {got}"
    assert fixture["expected"]["messageContains"] in got["message"], got


def test_script_is_valid_lua_51_without_a_status() -> None:
    """Runs on a bare object (no metadata, no status): Argo CD calls it on anything of the kind."""
    assert health({"apiVersion": "finetune.dev/v1alpha1", "kind": "FinetuneJob"})["status"] == "Progressing"


def test_observed_generation_gate_applies_to_every_phase() -> None:
    for phase in ("Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"):
        status: dict[str, Any] = {"phase": phase, "observedGeneration": 4}
        obj = {"metadata": {"generation": 5}, "status": status}
        assert health(obj)["status"] == "Progressing", phase
        status["observedGeneration"] = 5
        expected = {"Succeeded": "Healthy", "Failed": "Degraded", "Suspended": "Suspended"}.get(
            phase, "Progressing"
        )
        assert health(obj)["status"] == expected, phase
