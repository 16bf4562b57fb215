"""Locations in a trainer config, as this process sees them, and loading the config.

* ``pvc://CLAIM/PATH`` is the local path ``PVC_MOUNT/CLAIM/PATH`` (the operator mounts every referenced claim
  at ``PVC_MOUNT/<claim>``, see ``finetune_operator.builders.mounts``).
* ``FINETUNE_PATH_MAP="/mnt/pvc=/tmp/x/pvc,/output=/tmp/x/out"`` rewrites container path prefixes to host paths
  (the local executor runs trainer "pods" as processes): applied to every location of the config when it is
  loaded, and to ``pvc://`` locations when they are resolved later (``adapter.continueFrom``).
* ``FINETUNE_ATTEMPT`` (set per pod by the operator, whose ConfigMap is per job) overrides ``attempt``;
  ``FINETUNE_TERMINATION_LOG`` overrides ``resultPath``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from finetune_operator.api.trainerconfig import DATA_MOUNT, PVC_MOUNT, TrainerConfig

PATH_MAP_ENV = "FINETUNE_PATH_MAP"
ATTEMPT_ENV = "FINETUNE_ATTEMPT"
TERMINATION_LOG_ENV = "FINETUNE_TERMINATION_LOG"


class ConfigError(ValueError):
    """A trainer config (or its environment) that cannot be used; the message names the field or variable."""


def parse_path_map(text: str | None) -> dict[str, str]:
    """``"/a=/x,/b=/y"`` -> {"/a": "/x", "/b": "/y"}; empty or unset -> {}."""
    mapping: dict[str, str] = {}
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        src, sep, dst = item.partition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src.startswith("/") or not dst:
            raise ConfigError(
                f"{PATH_MAP_ENV}: entry {item!r} is not CONTAINER_PATH=HOST_PATH with an absolute container path"
            )
        mapping[src.rstrip("/") or "/"] = dst.rstrip("/") or "/"
    return mapping


def env_path_map(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return parse_path_map((os.environ if env is None else env).get(PATH_MAP_ENV))


def map_path(value: str, mapping: Mapping[str, str]) -> str:
    """Replace the longest mapped prefix (whole path components only); other values unchanged."""
    for prefix in sorted(mapping, key=len, reverse=True):
        if prefix == "/":
            if value.startswith("/"):
                return mapping[prefix].rstrip("/") + value
            continue
        if value == prefix or value.startswith(prefix + "/"):
            return mapping[prefix] + value[len(prefix) :]
    return value


def pvc_path(uri: str) -> str:
    """``pvc://CLAIM/PATH`` -> ``PVC_MOUNT/CLAIM/PATH`` (as builders.mounts.local_model_path renders it)."""
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    if not claim:
        raise ConfigError(f"pvc:// location without a claim name: {uri!r}")
    return "/" + "/".join(p.strip("/") for p in (PVC_MOUNT, claim, path) if p.strip("/"))


def resolve_location(uri: str, mapping: Mapping[str, str] | None = None) -> str:
    """A location as this process reads it: pvc:// -> mounted path; then FINETUNE_PATH_MAP (env if None)."""
    mapping = env_path_map() if mapping is None else mapping
    loc = pvc_path(uri) if uri.startswith("pvc://") else uri
    return map_path(loc, mapping) if loc.startswith("/") else loc


def _local_model(value: str, mapping: Mapping[str, str]) -> str:
    return map_path(value, mapping) if value.startswith("/") else value


def apply_path_map(cfg: TrainerConfig, mapping: Mapping[str, str]) -> TrainerConfig:
    """The config with every local location rewritten by `mapping` (URIs and user-facing ones kept)."""
    if not mapping:
        return cfg

    def m(value: str | None) -> str | None:
        return map_path(value, mapping) if value is not None and value.startswith("/") else value

    engine = cfg.spec.engine
    if engine.sentence_transformers is not None:
        st = engine.sentence_transformers
        engine = engine.model_copy(
            update={"sentence_transformers": st.model_copy(update={"model": _local_model(st.model, mapping)})}
        )
    if engine.adapter is not None:
        ad = engine.adapter
        engine = engine.model_copy(
            update={"adapter": ad.model_copy(update={"base_model": _local_model(ad.base_model, mapping)})}
        )
    if engine.llm is not None:
        llm = engine.llm
        engine = engine.model_copy(
            update={"llm": llm.model_copy(update={"base_model": _local_model(llm.base_model, mapping)})}
        )
    report = cfg.report.model_copy(
        update={"token_path": m(cfg.report.token_path), "ca_path": m(cfg.report.ca_path)}
    )
    return cfg.model_copy(
        update={
            "spec": cfg.spec.model_copy(update={"engine": engine}),
            "train": m(cfg.train),
            "validation": m(cfg.validation),
            "documents": [map_path(d, mapping) if d.startswith("/") else d for d in cfg.documents],
            "output_dir": m(cfg.output_dir),
            "result_path": m(cfg.result_path),
            "report": report,
        }
    )


def apply_env(cfg: TrainerConfig, env: Mapping[str, str] | None = None) -> TrainerConfig:
    """FINETUNE_ATTEMPT, FINETUNE_PATH_MAP and FINETUNE_TERMINATION_LOG applied to a config."""
    env = os.environ if env is None else env
    raw = env.get(ATTEMPT_ENV, "").strip()
    if raw:
        try:
            attempt = int(raw)
        except ValueError:
            attempt = 0
        if attempt < 1:
            raise ConfigError(f"{ATTEMPT_ENV}: expected a positive integer, got {raw!r}")
        cfg = cfg.model_copy(update={"attempt": attempt})
    cfg = apply_path_map(cfg, env_path_map(env))
    term_log = env.get(TERMINATION_LOG_ENV, "").strip()
    if term_log:
        cfg = cfg.model_copy(update={"result_path": term_log})
    return cfg


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> TrainerConfig:
    """Read a TrainerConfig JSON file and apply the environment (raises OSError, ValidationError, ConfigError)."""
    cfg = TrainerConfig.model_validate_json(Path(path).read_text(encoding="utf-8"))
    return apply_env(cfg, env)


def unmap_path(value: str, mapping: Mapping[str, str]) -> str:
    """The inverse of map_path: a host path back to the container path it stands for."""
    for container, host in sorted(mapping.items(), key=lambda kv: len(kv[1]), reverse=True):
        if value == host or value.startswith(host.rstrip("/") + "/"):
            return container.rstrip("/") + value[len(host.rstrip("/")) :]
    return value


def user_facing(location: str | None, mapping: Mapping[str, str] | None = None) -> str | None:
    """A location as users name it in a FinetuneJob: ``PVC_MOUNT/CLAIM/PATH`` -> ``pvc://CLAIM/PATH``,
    ``DATA_MOUNT/CONFIGMAP/KEY`` -> ``configmap://CONFIGMAP/KEY`` (host paths of FINETUNE_PATH_MAP first
    mapped back); URLs and other paths unchanged."""
    if location is None:
        return None
    mapping = env_path_map() if mapping is None else mapping
    if location.startswith("/"):
        location = unmap_path(location, mapping)
    for mount, scheme in ((PVC_MOUNT, "pvc://"), (DATA_MOUNT, "configmap://")):
        if location.startswith(mount + "/"):
            return scheme + location[len(mount) + 1 :]
    return location
