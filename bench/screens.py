"""Screens for benchmarks: N WebSocket clients in one process, counting what they receive.

    python -m bench.screens WS_URL TOKEN JURISDICTION[,JURISDICTION...] [--stats FILE] [--count N]

Each client sends the SPEC §5 hello and reads until the process is terminated (SIGTERM); then --stats gets the
counts and, per seq, the latest delivery: `last[seq]` = max over screens of (receipt − sent), where "sent" is
the event's `data.sent_at` (wall-clock seconds) when it carries one, else its envelope `at` (stamped by the
service in the committing transaction). `--count N` repeats the one jurisdiction N times (1,000 screens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import connect


class Tally:
    def __init__(self, screens: int) -> None:
        self.received = 0
        self.last: dict[int, float] = {}  # seq → the latest screen's lateness (s)
        self.deliveries: dict[int, int] = {}  # seq → how many screens got it
        self.connected = 0
        self.screens = screens
        self.ready = asyncio.Event()

    def note(self, raw: str | bytes, now: float) -> None:
        msg = json.loads(raw)
        seq = msg.get("seq")
        if seq is None or msg.get("type") in ("welcome", "heartbeat"):
            return
        self.received += 1
        self.deliveries[seq] = self.deliveries.get(seq, 0) + 1
        sent = msg.get("data", {}).get("sent_at")
        if sent is None and isinstance(msg.get("at"), str):
            sent = datetime.fromisoformat(msg["at"]).timestamp()
        if sent is not None:
            late = now - sent
            if late > self.last.get(seq, float("-inf")):
                self.last[seq] = late


async def screen(url: str, token: str, jurisdiction: str | None, tally: Tally) -> None:
    async with connect(url, max_queue=None, compression=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"token": token, "since": None, "jurisdiction": jurisdiction}))
        await ws.recv()  # welcome
        tally.connected += 1
        if tally.connected == tally.screens:
            tally.ready.set()
        async for raw in ws:
            tally.note(raw, time.time())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("jurisdictions", help="comma-separated, one screen each ('-' = the user's own)")
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--count", type=int, default=1, help="screens per jurisdiction")
    args = parser.parse_args()
    scopes = [None if j == "-" else j for j in args.jurisdictions.split(",")] * args.count
    tally = Tally(len(scopes))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []
    for i, j in enumerate(scopes):
        tasks.append(asyncio.create_task(screen(args.url, args.token, j, tally)))
        if i % 100 == 99:  # do not flood the listen backlog
            await asyncio.sleep(0.05)
    waiter = asyncio.create_task(tally.ready.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    if failed:
        raise RuntimeError(f"a screen failed: {failed[0].exception()!r}")
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    if args.stats:
        stats = {
            "received": tally.received,
            "screens": tally.screens,
            "last": {str(k): v for k, v in tally.last.items()},
            "deliveries": {str(k): v for k, v in tally.deliveries.items()},
        }
        args.stats.write_text(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main())
