"""Outbound webhook subscriptions, their delivery log and replay (admins only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, HttpUrl
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, CurrentActor
from api.errors import JSON
from dispatch import models as m
from dispatch import webhooks
from dispatch.access import sees_jurisdiction
from dispatch.domain import Actor, Refusal

SubscriptionId = Annotated[int, Path(ge=1, le=2**31 - 1)]

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


class SubscriptionIn(BaseModel):
    url: HttpUrl
    events: list[Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_*]+)*$", max_length=64)]] = []
    jurisdiction: Annotated[str | None, Field(pattern=r"^\d{6}(\d{3}){0,3}$")] = None
    secret: Annotated[str | None, Field(min_length=16, max_length=200)] = None
    since_seq: Annotated[int | None, Field(ge=0)] = None  # backfill from here; default: from now on


class ReplayIn(BaseModel):
    since_seq: Annotated[int | None, Field(ge=0)] = None
    until_seq: Annotated[int | None, Field(ge=0)] = None
    dead_only: bool = False


def _admin(actor: Actor) -> None:
    if actor.role != "admin":
        raise Refusal(403, "forbidden", "only administrators manage webhooks")


def _public(sub: m.WebhookSubscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": sub.event_types,
        "jurisdiction": sub.jurisdiction,
        "active": sub.active,
        "cursor": sub.cursor,
        "created_at": sub.created_at.isoformat(),
        "created_by": sub.created_by,
    }


def _owned(container: ContainerDep, actor: Actor, subscription_id: int) -> m.WebhookSubscription:
    _admin(actor)
    with container.db.read() as s:
        sub = s.get(m.WebhookSubscription, subscription_id)
    # A subscription without a jurisdiction (made with the CLI) belongs to unbound admins only.
    visible = sub is not None and (
        sees_jurisdiction(actor, sub.jurisdiction) if sub.jurisdiction else actor.unit_code is None
    )
    if sub is None or not visible:
        raise Refusal(404, "not_found", f"no webhook subscription {subscription_id}")
    return sub


@router.post("", status_code=201)
async def subscribe(body: SubscriptionIn, container: ContainerDep, actor: CurrentActor) -> JSON:
    """Subscribe a URL; the answer holds the signing secret, shown only this once."""
    _admin(actor)
    if not webhooks.host_allowed(str(body.url), container.settings.webhook_allowed_hosts):
        raise Refusal(
            422, "host_not_allowed", f"{body.url.host} is not in GRIDDISPATCH_WEBHOOK_ALLOWED_HOSTS"
        )
    jurisdiction = body.jurisdiction or (actor.unit_code[:6] if actor.unit_code else None)
    if jurisdiction and not sees_jurisdiction(actor, jurisdiction):
        raise Refusal(403, "forbidden", f"{jurisdiction} is outside your jurisdiction")
    sub = await run_in_threadpool(
        webhooks.add_subscription,
        container.db,
        str(body.url),
        actor.username,
        body.events,
        jurisdiction,
        body.secret,
        body.since_seq,
    )
    return JSON({**_public(sub), "secret": sub.secret}, status_code=201)


@router.get("")
async def list_subscriptions(container: ContainerDep, actor: CurrentActor) -> JSON:
    _admin(actor)
    subs = await run_in_threadpool(webhooks.subscriptions, container.db, True)
    mine = [s for s in subs if sees_jurisdiction(actor, s.jurisdiction or "")] if actor.unit_code else subs
    return JSON([_public(s) for s in mine])


@router.delete("/{subscription_id}")
async def unsubscribe(subscription_id: SubscriptionId, container: ContainerDep, actor: CurrentActor) -> JSON:
    _owned(container, actor, subscription_id)
    await run_in_threadpool(webhooks.deactivate, container.db, subscription_id)
    return JSON({"id": subscription_id, "active": False})


@router.get("/{subscription_id}/deliveries")
async def deliveries(
    subscription_id: SubscriptionId,
    container: ContainerDep,
    actor: CurrentActor,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSON:
    """The delivery log: each delivery with every attempt (time, HTTP status or error, duration)."""
    _owned(container, actor, subscription_id)
    items = await run_in_threadpool(webhooks.delivery_log, container.db, subscription_id, status, limit)
    return JSON({"items": items})


@router.post("/{subscription_id}/replay")
async def replay(
    subscription_id: SubscriptionId,
    body: ReplayIn,
    request: Request,
    container: ContainerDep,
    actor: CurrentActor,
) -> JSON:
    """Queue again the dead letters, or every matching event in (since_seq, until_seq]."""
    _owned(container, actor, subscription_id)
    count = await run_in_threadpool(
        webhooks.replay, container.db, subscription_id, body.since_seq, body.until_seq, body.dead_only
    )
    worker = getattr(request.app.state, "webhooks", None)
    if worker is not None:
        worker.poke()
    return JSON({"queued": count})
