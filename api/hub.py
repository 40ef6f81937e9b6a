"""In-process event hub: the outbox table is the truth, a commit only wakes the hub up.

One tailer task reads events after the last one it broadcast, in seq order, encodes each once and offers the
same bytes to every screen that may see it. Because it reads the committed outbox instead of trusting
publishers, screens see events in seq order without gaps even when commits finish out of order in threads.
A screen whose queue is full is cut off (1013) and resumes with `since`.

Several processes (PostgreSQL): every transaction that writes events sends NOTIFY at commit (dispatch/db.py),
and each process's hub LISTENs on a dedicated connection, so a commit in any process wakes every hub within
milliseconds. The notice is only a wake-up: the hub still reads the outbox, and a poll every `poll_seconds`
covers a lost notice or a broken listening connection. Commit order equals seq order (the counter row lock in
DispatchService._bump), so reading `seq > last_seq` never skips an event that commits late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from dispatch.db import EVENTS_CHANNEL, Database
from dispatch.queries import events_after, latest_seq

log = logging.getLogger(__name__)
STOP_SECONDS = 3.0

EventFilter = Callable[[dict[str, Any]], bool]


# Markers a connection's sender reads from its queue besides events (real seqs are >= 1).
TOO_SLOW = -1  # the hub cut the screen off: close with 1013
CLOSED = -2  # the screen went away: stop sending
HEARTBEAT = 0  # nothing was sent for a while: send a heartbeat


@dataclass(eq=False)
class Subscriber:
    """A screen's send queue. The hub puts the same encoded text for every screen (encoded once per event);
    the connection's one sender task takes it out, so a broadcast costs a put and a wake-up per screen."""

    accepts: EventFilter
    limit: int
    queue: asyncio.Queue[tuple[int, str]] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, seq: int, event: dict[str, Any], encoded: str) -> None:
        if self.overflowed or not self.accepts(event):
            return
        if self.queue.qsize() >= self.limit:
            self.overflowed = True
            self.queue.put_nowait((TOO_SLOW, ""))  # wakes the sender, which closes with 1013
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
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last_seq = await asyncio.to_thread(latest_seq, self.db)
        self._task = asyncio.create_task(self._tail(), name="event-hub")
        if self.db.is_postgresql:
            self._listener = asyncio.create_task(self._listen(), name="event-hub-listen")

    async def stop(self) -> None:
        tasks = [t for t in (self._listener, self._task) if t]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a LISTEN connection being torn down can sit on its lock; shutdown must not hang on it.
            await asyncio.wait(tasks, timeout=STOP_SECONDS)

    async def _listen(self) -> None:
        """Wake up on every other process's commit (PostgreSQL LISTEN); reconnect when the link breaks."""
        import psycopg

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.db.libpq_url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    self._wake.set()  # catch up with whatever committed while we were not listening
                    async for _notice in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("event hub lost its LISTEN connection; polling until it is back", exc_info=True)
                await asyncio.sleep(self.poll_seconds)

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


def encode(event: dict[str, Any]) -> str:
    """The event as the text frame every screen gets (encoded once, shared by all)."""
    return orjson.dumps(event).decode()
