"""Screens for benchmarks: N WebSocket clients in one process, counting what they receive.

    python -m bench.screens WS_URL TOKEN JURISDICTION[,JURISDICTION...] [--stats FILE]

Each client sends the SPEC §5 hello and reads until the process is terminated (SIGTERM), then the counts and,
for events carrying a `sent_at` wall-clock time, the lateness of each delivery are written to --stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

from websockets.asyncio.client import connect


async def screen(url: str, token: str, jurisdiction: str | None, got: list[int], late: list[float], ready: asyncio.Event, counter: list[int]) -> None:
    async with connect(url, max_queue=None, compression=None) as ws:
        await ws.send(json.dumps({"token": token, "since": None, "jurisdiction": jurisdiction}))
        await ws.recv()  # welcome
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        async for raw in ws:
            now = time.time()
            msg = json.loads(raw)
            if "seq" in msg and msg.get("type") not in ("welcome", "heartbeat"):
                got[0] += 1
                at = msg.get("data", {}).get("sent_at")
                if at is not None:
                    late.append(now - at)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("jurisdictions", help="comma-separated, one screen each ('-' = the user's own)")
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args()
    scopes = [None if j == "-" else j for j in args.jurisdictions.split(",")]
    got, late = [0], []
    ready = asyncio.Event()
    counter = [0, len(scopes)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(screen(args.url, args.token, j, got, late, ready, counter)) for j in scopes]
    await ready.wait()
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    if args.stats:
        args.stats.write_text(json.dumps({"received": got[0], "lateness": late}))


if __name__ == "__main__":
    asyncio.run(main())
