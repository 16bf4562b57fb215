"""URLs of the emulated kube-apiserver: which resource a path names (and the CRD manifests of a directory)."""

from __future__ import annotations

import builtins
import os
import pathlib

import yaml

from finetune_operator.local.semantics import JsonDict


def load_crds(directory: str | os.PathLike[str]) -> builtins.list[JsonDict]:
    """Every CustomResourceDefinition document in ``directory/*.yaml`` (sorted by file name)."""
    result: builtins.list[JsonDict] = []
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                result.append(doc)
    return result


class ParsedPath:
    """``/apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]``."""

    def __init__(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> None:
        self.group = group
        self.version = version
        self.plural = plural
        self.namespace = namespace
        self.name = name
        self.subresource = subresource


def parse_path(path: str) -> ParsedPath | None:
    """Parse a resource URL; None for anything else (discovery, /version, ...)."""
    segs = [seg for seg in path.split("/") if seg]
    if len(segs) >= 2 and segs[0] == "api":
        group, version, rest = "", segs[1], segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    if not rest:
        return None
    namespace: str | None = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    return ParsedPath(
        group,
        version,
        rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )
