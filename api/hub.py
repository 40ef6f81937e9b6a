"""In-process event hub: the outbox table is the truth, a commit only wakes the hub up.

One tailer task reads events after the last one it broadcast, in seq order, encodes each once and offers the
same bytes to every screen that may see it. Because it reads the committed outbox instead of trusting
publishers, screens see events in seq order without gaps even when commits finish out of order in threads.
A screen whose queue is full is cut off (1013) and resumes with `since`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from dispatch.db import Database
from dispatch.queries import events_after, latest_seq

log = logging.getLogger(__name__)

EventFilter = Callable[[dict[str, Any]], bool]


@dataclass(eq=False)
class Subscriber:
    accepts: EventFilter
    limit: int
    queue: asyncio.Queue[tuple[int, bytes]] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, seq: int, event: dict[str, Any], encoded: bytes) -> None:
        if self.overflowed or not self.accepts(event):
            return
        if self.queue.qsize() >= self.limit:
            self.overflowed = True
            self.queue.put_nowait((-1, b""))  # wakes the sender, which closes with 1013
            return
        self.queue.put_nowait((seq, encoded))


class EventHub:
    def __init__(self, db: Database, queue_limit: int = 1000, poll_seconds: float = 1.0) -> None:
        self.db = db
        self.queue_limit = queue_limit
        self.poll_seconds = poll_seconds
        self.last_seq = 0
        self.subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last_seq = await asyncio.to_thread(latest_seq, self.db)
        self._task = asyncio.create_task(self._tail(), name="event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self, *_: Any) -> None:
        """After a commit, from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def subscribe(self, accepts: EventFilter) -> tuple[Subscriber, int]:
        """Register a screen; returns it with the seq it will receive live events after. Runs without an
        await, so no event can slip between the replay bound and the first live one."""
        sub = Subscriber(accepts, self.queue_limit)
        self.subscribers.add(sub)
        return sub, self.last_seq

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _tail(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event hub could not read the outbox; retrying")
                await asyncio.sleep(self.poll_seconds)

    async def _drain(self) -> None:
        while True:
            batch = await asyncio.to_thread(events_after, self.db, self.last_seq, 500)
            for event in batch:
                encoded = encode(event)
                for sub in list(self.subscribers):
                    sub.offer(event["seq"], event, encoded)
                self.last_seq = event["seq"]
            if len(batch) < 500:
                return


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)
