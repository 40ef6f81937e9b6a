"""Open311 API keys: a hotline or 311 system's `api_key`, bound to a county. Minimal on purpose and named
for Open311 only, so that general API keys (security work) can absorb it: a key is 32 random bytes shown once;
only its SHA-256 is stored, so a leaked database does not leak working keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from dispatch import models as m
from dispatch.db import Database
from dispatch.domain import Actor

ROLE = "open311_client"  # the role of the actor a keyed request acts as


@dataclass(frozen=True)
class KeyHolder:
    label: str
    county: str

    @property
    def actor(self) -> Actor:
        # Bound to the county: an address outside every grid lands in this county's triage.
        return Actor(f"open311:{self.label}", ROLE, self.county, None)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_key(db: Database, label: str, county: str, now: datetime) -> str:
    """Make a key for a client system; returns the key (the only time it is seen)."""
    key = "o311_" + secrets.token_urlsafe(32)
    with db.write() as s:
        s.add(m.Open311ApiKey(key_hash=_digest(key), label=label, county=county, created_at=now))
    return key


def revoke_key(db: Database, label: str) -> bool:
    with db.write() as s:
        done = s.execute(update(m.Open311ApiKey).where(m.Open311ApiKey.label == label).values(active=False))
        return bool(done.rowcount)


def holder_of(db: Database, key: str | None) -> KeyHolder | None:
    if not key:
        return None
    with db.read() as s:
        row = s.get(m.Open311ApiKey, _digest(key))
    if row is None or not row.active:
        return None
    return KeyHolder(row.label, row.county)


def list_keys(db: Database) -> list[m.Open311ApiKey]:
    with db.read() as s:
        return list(s.execute(select(m.Open311ApiKey).order_by(m.Open311ApiKey.label)).scalars())
