"""kopf wiring of TrainingQuota admission: install the QuotaController at startup, feed it the watch events."""

from __future__ import annotations

from typing import Any

from .quota_controller import QuotaController


def register_quota(registry: Any) -> None:
    """Add quota admission to a kopf registry (call from ``build_registry``).

    * on startup: :meth:`QuotaController.install` into ``memo.ctx`` (the handlers' OperatorContext), which
      makes the controller the admission hook;
    * TrainingQuota events (spec changes, creation, deletion) and FinetuneJob events that free capacity
      (finished, suspended, deleted) run admission at once.
    """
    import kopf

    if getattr(registry, "_finetune_quota", False):  # registered already
        return
    registry._finetune_quota = True

    @kopf.on.startup(registry=registry)
    async def quota_startup(memo: Any, **_: Any) -> None:
        QuotaController.install(memo.ctx)

    @kopf.on.cleanup(registry=registry)
    async def quota_cleanup(memo: Any, **_: Any) -> None:
        controller = controller_of(memo)
        if controller is not None:
            await controller.close()

    def controller_of(memo: Any) -> QuotaController | None:
        found = getattr(memo.ctx, "quota", None)
        return found if isinstance(found, QuotaController) else None

    @kopf.on.event("finetune.dev", "v1alpha1", "trainingquotas", registry=registry)  # type: ignore[arg-type]
    async def quota_event(memo: Any, body: Any, type: str | None, **_: Any) -> None:
        controller = controller_of(memo)
        if controller is not None:
            controller.observe_quota(dict(body), deleted=type == "DELETED")

    @kopf.on.event("finetune.dev", "v1alpha1", "finetunejobs", registry=registry)  # type: ignore[arg-type]
    async def quota_job_event(memo: Any, body: Any, type: str | None, **_: Any) -> None:
        controller = controller_of(memo)
        if controller is not None:
            controller.observe(dict(body), deleted=type == "DELETED")
