"""The ports a backend is given by the running operator: settings, the API client, the watch cache, wake-ups.

They live here, below both the backends and the handlers: the handlers' `OperatorContext` satisfies
`BackendContext` structurally, and no backend imports `finetune_operator.handlers` (an import-linter
contract in pyproject.toml keeps it so).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ..config import Settings
from ..kube import JsonDict, KubeClient


class ChildCacheView(Protocol):
    """The operator's watch cache of a FinetuneJob's owned Jobs and Pods, as a backend uses it."""

    def child(self, owner_uid: str, kind: str, name: str) -> JsonDict | None:
        """The cached child `kind`/`name` of the FinetuneJob `owner_uid`, if any."""
        ...

    def put_child(self, owner_uid: str, body: JsonDict, deleted: bool) -> bool:
        """Cache a child's state (from an API response); returns whether it was news."""
        ...

    def pods_of(self, owner_uid: str, job_name: str) -> list[JsonDict]:
        """The cached pods of the batch Job `job_name`."""
        ...


class BackendContext(Protocol):
    """What a backend may use of the running operator (the handlers' OperatorContext provides it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def kube(self) -> KubeClient: ...

    @property
    def cache(self) -> ChildCacheView: ...

    def wake_at(self, uid: str, when: datetime, now: datetime) -> None:
        """Reconcile the FinetuneJob `uid` again at `when`."""
        ...
