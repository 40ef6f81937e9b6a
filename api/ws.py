"""WebSocket `/ws/events` (SPEC §5): welcome, replay after `since`, then live events in seq order.

The token comes in the first message, never in the URL. The screen is registered with the hub before the
replay is read, and the replay stops at the seq the live stream starts after, so nothing is missed or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.deps import actor_for_token
from api.hub import CLOSED, HEARTBEAT, TOO_SLOW, EventFilter, Subscriber, encode
from dispatch.access import COUNTY_WIDE_ROLES, sees_jurisdiction
from dispatch.bootstrap import Container
from dispatch.domain import Actor
from dispatch.queries import events_after

router = APIRouter()
FIRST_MESSAGE_SECONDS = 10.0
MAX_FIRST_MESSAGE = 4096


def event_filter(actor: Actor, jurisdiction: str | None) -> EventFilter:
    if actor.role == "department_staff":
        dept = actor.department

        def department_sees(event: dict[str, Any]) -> bool:
            return dept in event["data"].get("incident", {}).get("departments", [])

        return department_sees
    scope = jurisdiction or (
        actor.unit_code[:6] if actor.unit_code and actor.role in COUNTY_WIDE_ROLES else actor.unit_code
    )

    def inside(event: dict[str, Any]) -> bool:
        return scope is None or scope in event["jurisdiction"]

    return inside


async def _hello(ws: WebSocket, container: Container) -> tuple[Actor, int | None, str | None] | None:
    try:
        raw = await asyncio.wait_for(ws.receive_text(), FIRST_MESSAGE_SECONDS)
    except (TimeoutError, WebSocketDisconnect, KeyError):
        return None
    if len(raw) > MAX_FIRST_MESSAGE:
        await ws.close(1009, "first message too large")
        return None
    try:
        hello = orjson.loads(raw)
        token, since, jurisdiction = hello["token"], hello.get("since"), hello.get("jurisdiction")
        if since is not None and (not isinstance(since, int) or since < 0):
            raise ValueError
        if jurisdiction is not None and not isinstance(jurisdiction, str):
            raise ValueError
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        await ws.close(
            1008, 'first message must be {"token": ..., "since": <seq or null>, "jurisdiction": <code>?}'
        )
        return None
    actor = await asyncio.to_thread(actor_for_token, container, token if isinstance(token, str) else None)
    if actor is None:
        await ws.close(1008, "invalid or expired token")
        return None
    if jurisdiction is not None and not sees_jurisdiction(actor, jurisdiction):
        await ws.close(1008, "jurisdiction outside your own")
        return None
    return actor, since, jurisdiction


@router.websocket("/ws/events")
async def events(ws: WebSocket) -> None:
    container: Container = ws.app.state.container
    hub = ws.app.state.hub
    await ws.accept()
    hello = await _hello(ws, container)
    if hello is None:
        return
    actor, since, jurisdiction = hello
    accepts = event_filter(actor, jurisdiction)
    sub, live_after = hub.subscribe(accepts)
    sent = since if since is not None else live_after
    # One sender (this task) reads the queue; the reader and the heartbeat only put markers into it, so a
    # live event costs this connection one queue wake-up and one send.
    reader = asyncio.create_task(_read_until_closed(ws))
    reader.add_done_callback(lambda _: sub.queue.put_nowait((CLOSED, "")))
    activity = [asyncio.get_running_loop().time()]
    beat = asyncio.create_task(_heartbeat(sub, container.settings.ws_heartbeat_seconds, activity))
    try:
        await ws.send_text(orjson.dumps({"type": "welcome", "seq": live_after}).decode())
        while since is not None and sent < live_after:
            batch = await asyncio.to_thread(events_after, container.db, sent, 500, live_after)
            if not batch:
                break
            for event in batch:
                if accepts(event):
                    await ws.send_text(encode(event))
            sent = batch[-1]["seq"]
        sent = max(sent, live_after)
        while True:
            seq, text = await sub.queue.get()
            if seq > sent:
                await ws.send_text(text)
                sent = seq
                activity[0] = asyncio.get_running_loop().time()
            elif seq == HEARTBEAT:
                await ws.send_text(orjson.dumps({"type": "heartbeat", "seq": sent}).decode())
                activity[0] = asyncio.get_running_loop().time()
            elif seq == TOO_SLOW:
                await ws.close(1013, "too slow: reconnect with since")
                break
            elif seq == CLOSED:
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.unsubscribe(sub)
        for task in (beat, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _heartbeat(sub: Subscriber, every: float, activity: list[float]) -> None:
    """Ask the sender for a heartbeat after `every` seconds without anything sent."""
    loop = asyncio.get_running_loop()
    while True:
        idle = loop.time() - activity[0]
        if idle >= every:
            sub.queue.put_nowait((HEARTBEAT, ""))
            activity[0] = loop.time()  # one request per quiet period, even if the sender is busy
            idle = 0.0
        await asyncio.sleep(every - idle)


async def _read_until_closed(ws: WebSocket) -> None:
    """Screens only listen; we read to notice the close (and drop whatever they send)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
