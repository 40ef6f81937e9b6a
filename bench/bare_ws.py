"""The fan-out baseline: a bare Starlette WebSocket server with no engine.

    uvicorn --factory bench.bare_ws:create_app --ws-per-message-deflate false

Screens send the same hello and get a welcome; `POST /broadcast` stamps a fixed ~300-byte event (the same
envelope as ours: seq, type, at, incident_id, jurisdiction, data) and sends it to every screen, one after the
other — the plain way to broadcast with Starlette.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

DATA = {
    "action": "comment",
    "actor": "dispatcher",
    "note": "benchmark broadcast",
    "incident": {"id": "360102-20261129-000001", "state": "grid_discovery", "tier": "grid", "light": "green"},
}


def create_app() -> Starlette:
    screens: set[WebSocket] = set()
    seqs = itertools.count(1)
    pending: set[asyncio.Task[None]] = set()

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()  # the hello; no token check in the baseline
        await ws.send_text(json.dumps({"type": "welcome", "seq": 0}))
        screens.add(ws)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            screens.discard(ws)

    async def send_all(text: str) -> None:
        for ws in list(screens):
            try:
                await ws.send_text(text)
            except Exception:
                screens.discard(ws)

    async def broadcast(request: Request) -> JSONResponse:
        seq = next(seqs)
        event = {
            "seq": seq,
            "type": "incident.commented",
            "at": datetime.now(UTC).isoformat(),
            "incident_id": "360102-20261129-000001",
            "jurisdiction": ["360102", "360102001", "360102001001", "360102001001001"],
            "data": DATA,
        }
        task = asyncio.create_task(send_all(json.dumps(event, ensure_ascii=False)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return JSONResponse({"seq": seq, "screens": len(screens)})

    return Starlette(
        routes=[WebSocketRoute("/ws/events", ws_endpoint), Route("/broadcast", broadcast, methods=["POST"])]
    )
