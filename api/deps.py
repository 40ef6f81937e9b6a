"""FastAPI dependencies: the container, the current user (as a domain Actor)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool

from dispatch import models as m
from dispatch.auth import read_token
from dispatch.bootstrap import Container
from dispatch.domain import Actor

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


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


def actor_for_token(container: Container, token: str | None) -> Actor | None:
    if not token:
        return None
    claims = read_token(token, container.jwt_secret)
    if claims is None:
        return None
    found, actor = _cached(claims["sub"])
    return actor if found else _load_actor(container, claims["sub"])


async def current_actor(container: ContainerDep, token: Annotated[str | None, Depends(oauth2)]) -> Actor:
    claims = read_token(token, container.jwt_secret) if token else None
    actor = None
    if claims is not None:
        found, actor = _cached(claims["sub"])
        if not found:
            actor = await run_in_threadpool(_load_actor, container, claims["sub"])
    if actor is None:
        raise HTTPException(401, "not signed in or the token expired", headers={"WWW-Authenticate": "Bearer"})
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
