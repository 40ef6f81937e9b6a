"""Rate limits per token and per client address (token buckets, in memory, per process).

A runaway client or a script hammering the API gets 429 with Retry-After instead of starving grid workers.
Buckets live in one process: with N processes behind a proxy the effective limit is N times higher, which is
what the proxy's own limits are for. A rate of 0 turns a limit off.
"""

from __future__ import annotations

import hashlib
import math
import time

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

LIMITED_PREFIXES = ("/api/", "/open311/")
MAX_BUCKETS = 100_000


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now


class TokenBuckets:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float) -> float:
        """0 if allowed, else the seconds until a request would be."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:  # forget idle clients rather than grow without bound
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


class RateLimit:
    def __init__(self, app: ASGIApp, per_token: float, per_ip: float, burst_seconds: float = 2.0) -> None:
        self.app = app
        self.tokens = TokenBuckets(per_token, per_token * burst_seconds)
        self.addresses = TokenBuckets(per_ip, per_ip * burst_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        client = scope.get("client")
        wait = self.addresses.take(client[0] if client else "?", now)
        credential = _credential(scope)
        if credential and not wait:
            wait = self.tokens.take(credential, now)
        if wait:
            body = orjson.dumps({"detail": "too many requests; slow down", "code": "rate_limited"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _credential(scope: Scope) -> str | None:
    """The bearer token or API key, hashed: buckets never hold a usable credential."""
    for name, value in scope.get("headers", []):
        if name in (b"authorization", b"x-api-key"):
            return hashlib.blake2b(value, digest_size=16).hexdigest()
    return None
