"""Passwords (argon2) and short-lived signed access tokens (JWT, HS256)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(username: str, secret: str, now: datetime, minutes: int) -> str:
    # Tokens carry identity only: role and unit are read from the database on every request, so a change
    # to a user takes effect at once.
    claims = {
        "sub": username,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(token: str, secret: str) -> dict[str, Any] | None:
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError:
        return None


SCREEN_SCOPE = "screen"


def issue_screen_token(issuer: str, jurisdiction: str, secret: str, now: datetime, days: int) -> str:
    """A read-only token for a wall screen, bound to one jurisdiction; it carries who issued it, and stops
    working when that user is disabled."""
    claims = {
        "sub": issuer,
        "scope": SCREEN_SCOPE,
        "jur": jurisdiction,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(days=days)).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
