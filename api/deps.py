"""FastAPI dependencies: the container, the current user (as a domain Actor)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool

from dispatch import models as m
from dispatch.auth import SCREEN_SCOPE, read_token
from dispatch.bootstrap import Container
from dispatch.domain import Actor
from dispatch.open311_keys import holder_of

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="key of a client system")


def get_container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


ContainerDep = Annotated[Container, Depends(get_container)]


# Who a username is (role, unit) is read from the database, then trusted for a few seconds: a disabled user
# or a changed role takes effect within USER_CACHE_SECONDS, and a busy intake does not read the user table
# once per report.
USER_CACHE_SECONDS = 10.0
_users: dict[str, tuple[float, Actor | None]] = {}


def _load_actor(container: Container, username: str) -> Actor | None:
    with container.db.read() as s:
        user = s.get(m.User, username)
    actor = (
        None
        if user is None or not user.active
        else Actor(user.username, user.role, user.unit_code, user.department)
    )
    _users[username] = (time.monotonic() + USER_CACHE_SECONDS, actor)
    return actor


def _cached(username: str) -> tuple[bool, Actor | None]:
    hit = _users.get(username)
    if hit is None or hit[0] < time.monotonic():
        return False, None
    return True, hit[1]


def _from_claims(claims: dict[str, Any], issuer: Actor | None) -> Actor | None:
    """The acting user, or for a screen token a read-only actor bound to the token's jurisdiction (only
    while the user who issued it is still active)."""
    if issuer is None or claims.get("scope") != SCREEN_SCOPE:
        return issuer
    return Actor(f"screen:{issuer.username}", "screen", str(claims.get("jur", "")))


def actor_for_token(container: Container, token: str | None) -> Actor | None:
    if not token:
        return None
    claims = read_token(token, container.jwt_secret)
    if claims is None:
        return None
    found, actor = _cached(claims["sub"])
    return _from_claims(claims, actor if found else _load_actor(container, claims["sub"]))


async def current_actor(
    container: ContainerDep,
    token: Annotated[str | None, Depends(oauth2)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Actor:
    """A bearer token (people, screens) or an `X-API-Key` (other systems: hotline, 311 clients)."""
    claims = read_token(token, container.jwt_secret) if token else None
    actor = None
    if claims is not None:
        found, actor = _cached(claims["sub"])
        if not found:
            actor = await run_in_threadpool(_load_actor, container, claims["sub"])
        actor = _from_claims(claims, actor)
    elif api_key:
        holder = await run_in_threadpool(holder_of, container.db, api_key)
        actor = holder.actor if holder else None
    if actor is None:
        raise HTTPException(401, "not signed in or the token expired", headers={"WWW-Authenticate": "Bearer"})
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
