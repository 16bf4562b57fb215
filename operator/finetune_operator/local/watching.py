"""Watchers of the emulated kube-apiserver: one committed change (a :class:`WatchEvent`), offered to each
:class:`Watcher`, which filters it by resource and selector (an object leaving or entering a selection
becomes DELETED or ADDED, as in the real apiserver) and queues it for its stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

import aiohttp.web

from finetune_operator.local.semantics import JsonDict, Selector, clone


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    rv: int
    storage_key: tuple[str, str]
    type: str
    object: JsonDict
    old: JsonDict | None
    propagation: str | None = None  # DeleteOptions.propagationPolicy of a DELETED event


class Watcher:
    """An unbounded per-watcher queue of watch events; ``None`` in the queue means "closed"."""

    def __init__(self, storage_key: tuple[str, str] | None, selector: Selector) -> None:
        self.storage_key = storage_key  # None: everything (controllers)
        self.selector = selector
        self.queue: asyncio.Queue[JsonDict | None] = asyncio.Queue()
        self.closed = False
        self.propagations: dict[str, str] = {}  # uid -> propagationPolicy, for the garbage collector

    def offer(self, event: WatchEvent) -> None:
        if self.closed or (self.storage_key is not None and event.storage_key != self.storage_key):
            return
        new_ok = self.selector.matches(event.object)
        old_ok = event.old is not None and self.selector.matches(event.old)
        kind = event.type
        obj = event.object
        if kind == "MODIFIED" and not old_ok and new_ok:
            kind = "ADDED"
        elif kind == "MODIFIED" and old_ok and not new_ok:
            kind = "DELETED"  # left the selection: the old state with the new resourceVersion
            obj = clone(event.old or obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(event.rv)
        elif not new_ok:
            return
        if kind == "DELETED" and event.propagation:
            self.propagations[str(obj.get("metadata", {}).get("uid"))] = event.propagation
        self.queue.put_nowait({"type": kind, "object": obj})

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


async def stream_events(
    raw: aiohttp.web.BaseRequest, watcher: Watcher, timeout: float | None
) -> aiohttp.web.StreamResponse:
    """Stream a watcher's events as newline-delimited JSON until it closes, the client goes, or
    ``timeoutSeconds`` passes (events already queued are written together)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout is not None else None
    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    try:
        await response.prepare(raw)
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(watcher.queue.get(), remaining)
            except TimeoutError:
                break
            batch = [event]
            while not watcher.queue.empty() and batch[-1] is not None:
                batch.append(watcher.queue.get_nowait())
            chunk = b"".join(json.dumps(item).encode() + b"\n" for item in batch if item is not None)
            if chunk:
                await response.write(chunk)
            if batch[-1] is None:
                break
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    except ConnectionError:
        pass
    return response
