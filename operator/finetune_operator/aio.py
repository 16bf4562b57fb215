"""Small asyncio helpers shared by the operator's I/O layers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any


def spawn_logged(
    tasks: set[asyncio.Task[None]], coro: Awaitable[Any], name: str, log: logging.Logger
) -> None:
    """Run `coro` as a background task that logs (never raises) its failure; `tasks` keeps a strong reference
    until it is done, so it is neither garbage-collected mid-flight nor forgotten at shutdown."""

    async def _run() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed", name)

    task = asyncio.get_running_loop().create_task(_run(), name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
