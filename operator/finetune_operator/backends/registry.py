"""Which Backend trains which engine: EngineKind -> factory(ctx) -> Backend.

The in-cluster engines are registered here; the hosted backends (openai, gradient) register themselves with
`register()` from their modules, or are looked up lazily by module name so that their SDKs are imported
only when a job needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..api.finetunejob import EngineKind
from .base import Backend
from .ports import BackendContext

BackendFactory = Callable[[BackendContext], Backend]

# Hosted backends: module path and factory name, imported on first use.
_LAZY: dict[EngineKind, tuple[str, str]] = {
    EngineKind.OPENAI: ("finetune_operator.backends.openai_backend", "make_backend"),
    EngineKind.GRADIENT: ("finetune_operator.backends.gradient_backend", "make_backend"),
}


class BackendUnavailable(LookupError):
    """No backend is installed for an engine."""


class BackendRegistry:
    """A per-operator map of engine -> backend factory (no module-level state)."""

    def __init__(self) -> None:
        self._factories: dict[EngineKind, BackendFactory] = {}
        self._instances: dict[EngineKind, Backend] = {}

    def register(self, kind: EngineKind, factory: BackendFactory) -> None:
        self._factories[kind] = factory
        self._instances.pop(kind, None)

    def get(self, kind: EngineKind, ctx: BackendContext) -> Backend:
        """The backend for an engine (one instance per operator and engine)."""
        if kind in self._instances:
            return self._instances[kind]
        factory = self._factories.get(kind)
        if factory is None and kind in _LAZY:
            module_name, attr = _LAZY[kind]
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise BackendUnavailable(f"engine {kind.value} is not available: {exc}") from exc
            factory = getattr(module, attr, None)
        if factory is None:
            raise BackendUnavailable(f"engine {kind.value} has no backend")
        backend = factory(ctx)
        self._instances[kind] = backend
        return backend


def default_registry() -> BackendRegistry:
    """In-cluster engines registered; hosted ones resolved lazily."""
    from .incluster import InClusterBackend

    registry = BackendRegistry()
    registry.register(EngineKind.SENTENCE_TRANSFORMERS, InClusterBackend)
    registry.register(EngineKind.ADAPTER, InClusterBackend)
    registry.register(EngineKind.LLM, InClusterBackend)
    return registry
