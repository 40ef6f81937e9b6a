"""The FastAPI application: wiring in the lifespan, routes, WebSocket, error handling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import (
    errors,
    open311,
    pages,
    photos,
    ratelimit,
    routes_duty,
    routes_grids,
    routes_stats,
    routes_webhooks,
)
from api.errors import JSON
from api.hub import EventHub
from api.metrics import AppMetrics, RequestMetrics
from api.metrics import router as metrics_router
from api.routes import health, router
from api.ws import router as ws_router
from dispatch.bootstrap import Container, build
from dispatch.clock import Clock
from dispatch.logs import trace_timers
from dispatch.settings import Settings
from dispatch.timers import TimerRunner
from dispatch.webhooks import WebhookWorker, WorkerSettings


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, container: Container | None = None
) -> FastAPI:
    settings = settings or (container.settings if container else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = container or build(settings, clock)
        hub = EventHub(c.db, queue_limit=settings.ws_queue_limit)
        timers = TimerRunner(
            c.service,
            c.clock,
            sweep_seconds=settings.timer_sweep_seconds,
            claim_batch=settings.timer_claim_batch,
        )
        trace_timers(timers, c.db)  # each firing logs under its own request id and its case
        app.state.container, app.state.hub, app.state.timers = c, hub, timers
        await hub.start()
        c.service.listeners.append(hub.poke)
        await timers.start()
        # Webhooks read the outbox in their own task; a commit only wakes them (never waits for them).
        webhooks = WebhookWorker(c.db, WorkerSettings.from_settings(settings))
        app.state.webhooks = webhooks
        await webhooks.start()
        c.service.listeners.append(webhooks.poke)
        try:
            yield
        finally:
            c.service.listeners.remove(webhooks.poke)
            await webhooks.stop()
            timers.shutdown()
            c.service.listeners.remove(hub.poke)
            await hub.stop()
            if container is None:
                c.db.dispose()

    app = FastAPI(
        title="griddispatch",
        description="Grid-governance event dispatch engine (网格化治理事件调度引擎)",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    errors.install(app)
    errors.document_errors(app)
    app.include_router(health)
    app.include_router(router)
    app.include_router(routes_grids.router)
    app.include_router(pages.router)
    app.include_router(photos.router)
    app.include_router(routes_stats.router)
    app.include_router(routes_duty.router)
    app.include_router(open311.router)
    app.include_router(routes_webhooks.router)
    app.include_router(metrics_router)
    app.state.metrics = AppMetrics()
    app.state.metrics.watch(app.state)
    app.include_router(ws_router)
    # The app-wide body limit; multipart reports with photos get the larger upload limit.
    app.add_middleware(
        photos.UploadBodyLimit, limit=settings.max_body_bytes, upload_limit=settings.upload_max_bytes
    )
    app.add_middleware(ratelimit.RateLimit, per_token=settings.rate_per_token, per_ip=settings.rate_per_ip)
    # Outermost: times every request (413s and 429s included) and binds the request id the logs carry.
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app
