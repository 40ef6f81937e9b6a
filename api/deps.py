"""FastAPI dependencies: the container, the current user (as a domain Actor)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer

from dispatch import models as m
from dispatch.auth import read_token
from dispatch.bootstrap import Container
from dispatch.domain import Actor

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


ContainerDep = Annotated[Container, Depends(get_container)]


def actor_for_token(container: Container, token: str | None) -> Actor | None:
    if not token:
        return None
    claims = read_token(token, container.jwt_secret)
    if claims is None:
        return None
    with container.db.read() as s:
        user = s.get(m.User, claims["sub"])
    if user is None or not user.active:
        return None
    return Actor(user.username, user.role, user.unit_code, user.department)


def current_actor(container: ContainerDep, token: Annotated[str | None, Depends(oauth2)]) -> Actor:
    actor = actor_for_token(container, token)
    if actor is None:
        raise HTTPException(401, "not signed in or the token expired", headers={"WWW-Authenticate": "Bearer"})
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
