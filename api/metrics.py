"""Prometheus `/metrics` (prometheus-client) and the request middleware that feeds it and the access log.

Two kinds of series:
- per process, measured as requests pass: request latency histograms by route template (never the raw
  path, so case ids do not explode the label set);
- read from the database at scrape time, so every process reports the same truth and nothing is lost when a
  process restarts: reports ingested and escalations (counted from the incident table and the append-only
  escalation log), open incidents by light, timer lag (now minus the due time of the oldest unfired
  deadline, on the service clock), event lag of the hub and of the webhook cursors, webhook deliveries by
  state. With several processes, aggregate these with max(), not sum().
WebSocket connections and send-queue depth come from this process's hub.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatch import models as m
from dispatch.clock import utc
from dispatch.engine import light
from dispatch.logs import bound, new_request_id
from dispatch.service import to_domain

log = logging.getLogger("griddispatch.http")
FINAL = ("closed", "rejected", "merged")
_CREATED_ID = re.compile(rb'^\{"id":"([0-9A-Za-z-]{1,64})"')
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

router = APIRouter(tags=["ops"])


class AppMetrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "griddispatch_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch(self, app_state: Any) -> None:
        self.registry.register(DispatchCollector(app_state))


class DispatchCollector(Collector):
    def __init__(self, state: Any) -> None:
        self.state = state  # the app's state: container, hub, webhooks (set in the lifespan)

    def collect(self) -> Iterator[Metric]:
        container = getattr(self.state, "container", None)
        if container is None:
            return
        try:
            yield from self._from_database(container)
        except Exception:  # a scrape must not fail because the database hiccuped; the gap shows it
            log.exception("metrics: reading the database failed")
        hub = getattr(self.state, "hub", None)
        if hub is not None:
            subs = list(hub.subscribers)
            yield GaugeMetricFamily(
                "griddispatch_websocket_connections", "Open WebSocket screens (this process)", len(subs)
            )
            depth = GaugeMetricFamily(
                "griddispatch_websocket_send_queue_depth",
                "Events waiting to be sent to screens (this process)",
                labels=["stat"],
            )
            sizes = [s.queue.qsize() for s in subs]
            depth.add_metric(["sum"], sum(sizes))
            depth.add_metric(["max"], max(sizes, default=0))
            yield depth

    def _from_database(self, c: Any) -> Iterator[Metric]:
        now = c.clock.now()
        with c.db.read() as s:
            reports = s.execute(
                select(m.Incident.county, m.Incident.source, func.count()).group_by(
                    m.Incident.county, m.Incident.source
                )
            ).all()
            escalations = s.execute(
                select(
                    m.EscalationEntry.county,
                    m.EscalationEntry.reason,
                    m.EscalationEntry.to_tier,
                    func.count(),
                ).group_by(m.EscalationEntry.county, m.EscalationEntry.reason, m.EscalationEntry.to_tier)
            ).all()
            open_rows = list(s.execute(select(m.Incident).where(m.Incident.state.not_in(FINAL))).scalars())
            oldest_due = s.execute(
                select(func.min(m.DeadlineRow.due_at)).where(
                    m.DeadlineRow.status == "pending", m.DeadlineRow.due_at <= now
                )
            ).scalar_one_or_none()
            last_seq = int(s.execute(select(func.max(m.Event.seq))).scalar_one_or_none() or 0)
            cursor = s.execute(
                select(func.min(m.WebhookSubscription.cursor)).where(m.WebhookSubscription.active)
            ).scalar_one_or_none()
            deliveries = s.execute(
                select(m.WebhookDelivery.status, func.count()).group_by(m.WebhookDelivery.status)
            ).all()

        ingested = CounterMetricFamily(
            "griddispatch_reports_ingested", "Reports turned into cases", labels=["county", "source"]
        )
        for county, source, n in reports:
            ingested.add_metric([county, source], n)
        yield ingested

        climbed = CounterMetricFamily(
            "griddispatch_escalations",
            "Escalation log entries by reason and the tier the case went to",
            labels=["county", "reason", "tier"],
        )
        for county, reason, tier, n in escalations:
            climbed.add_metric([county, reason, tier], n)
        yield climbed

        lights = Counter((r.county, light(to_domain(r), now)) for r in open_rows)
        counties = sorted({r.county for r in open_rows}) or sorted(c.tree.counties)
        by_light = GaugeMetricFamily(
            "griddispatch_open_incidents", "Open cases by traffic light", labels=["county", "light"]
        )
        for county in counties:
            for colour in ("green", "yellow", "red"):
                by_light.add_metric([county, colour], lights.get((county, colour), 0))
        yield by_light

        lag = (now - utc(oldest_due)).total_seconds() if oldest_due is not None else 0.0
        yield GaugeMetricFamily(
            "griddispatch_timer_lag_seconds",
            "Service-clock seconds since the oldest deadline that is due but not fired yet (0: none)",
            max(lag, 0.0),
        )
        yield GaugeMetricFamily("griddispatch_event_seq", "The newest event seq in the outbox", last_seq)
        event_lag = GaugeMetricFamily(
            "griddispatch_event_lag", "Outbox events a consumer has not read yet", labels=["consumer"]
        )
        hub = getattr(self.state, "hub", None)
        if hub is not None:
            event_lag.add_metric(["hub"], max(0, last_seq - hub.last_seq))
        event_lag.add_metric(["webhooks"], max(0, last_seq - cursor) if cursor is not None else 0)
        yield event_lag
        states = GaugeMetricFamily(
            "griddispatch_webhook_deliveries", "Webhook deliveries by state", labels=["status"]
        )
        counted = dict(deliveries)
        for status in ("pending", "delivered", "dead"):
            states.add_metric([status], counted.get(status, 0))
        yield states


@router.get(
    "/metrics",
    include_in_schema=True,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Per request: bind a request id (the caller's X-Request-Id or a new one) for the logs, echo it in
    the response, time the request by route template, and write one access log line."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if given and len(given) <= 64 and given.isprintable() else new_request_id()
        status: dict[str, Any] = {"code": 500, "created": None}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body" and status["code"] == 201:
                # A new case: name it in the access line, so the report's request is found by case id too.
                found = _CREATED_ID.match(message.get("body", b"")[:200])
                status["created"] = found.group(1).decode() if found else None
            await send(message)

        started = time.perf_counter()
        with bound(rid):
            try:
                await self.app(scope, receive, sending)
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("route")
                template = getattr(route, "path", None) or "(unmatched)"
                self.metrics.latency.labels(scope["method"], template, str(status["code"])).observe(elapsed)
                incident = (scope.get("path_params") or {}).get("incident_id") or status["created"]
                log.info(
                    "%s %s %s",
                    scope["method"],
                    template,
                    status["code"],
                    extra={
                        "method": scope["method"],
                        "route": template,
                        "status": status["code"],
                        "duration_ms": round(elapsed * 1000, 1),
                        **({"incident_id": incident} if incident else {}),
                    },
                )
