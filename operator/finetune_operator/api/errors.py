"""Parsing bodies at the edge, with errors that name the field path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .finetunejob import FinetuneJob
from .trainingquota import TrainingQuota


class SpecError(ValueError):
    """An invalid object. `errors` holds (field path, message) pairs, paths in JSON (camelCase) form."""

    def __init__(self, kind: str, errors: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.errors = errors
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [f"{path}: {msg}" if path else msg for path, msg in self.errors]
        return f"invalid {self.kind}: " + "; ".join(parts)

    @property
    def fields(self) -> list[str]:
        return [path for path, _ in self.errors]


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """(path, message) pairs from a pydantic error, with camelCase paths such as spec.engine.adapter.epochs."""
    pairs: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = _path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = (
                "unknown field (credentials must be given as a Secret reference)"
                if any(w in path.lower() for w in ("key", "token", "secret", "password"))
                else "unknown field"
            )
        pairs.append((path, msg))
    return pairs


def _as_json(body: Mapping[str, Any]) -> str:
    # Strict JSON-mode validation refuses what the API server would ("yes" for a boolean, "2" for an
    # integer) while still reading timestamps and enums from their JSON strings.
    return json.dumps(dict(body), default=str)


def parse_job(body: Mapping[str, Any]) -> FinetuneJob:
    """Validate a FinetuneJob body; raise SpecError naming every offending field."""
    try:
        return FinetuneJob.model_validate_json(_as_json(body), strict=True)
    except ValidationError as exc:
        raise SpecError("FinetuneJob", format_validation_error(exc)) from None


def parse_quota(body: Mapping[str, Any]) -> TrainingQuota:
    """Validate a TrainingQuota body; raise SpecError naming every offending field."""
    try:
        return TrainingQuota.model_validate_json(_as_json(body), strict=True)
    except ValidationError as exc:
        raise SpecError("TrainingQuota", format_validation_error(exc)) from None
