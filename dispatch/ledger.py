"""Hash chain for append-only logs: each entry stores the previous entry's hash, so editing, deleting or
reordering a row breaks every link after it. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        # Some databases return naive datetimes; everything stored is UTC.
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    body = json.dumps(
        {k: _canonical(v) for k, v in sorted(fields.items())},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,  # nested data (timeline details) may come back from the database in another order
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    entries: int
    first_broken_id: int | None = None
    problem: str | None = None


def verify_chain(rows: Iterable[tuple[int, str, str, Mapping[str, Any]]]) -> ChainCheck:
    """rows: (id, prev_hash, hash, hashed fields) in id order. Reports the first broken link."""
    prev = GENESIS
    count = 0
    for row_id, prev_hash, stored, fields in rows:
        count += 1
        if prev_hash != prev:
            return ChainCheck(False, count, row_id, "previous-hash link does not match the entry before it")
        if entry_hash(prev_hash, fields) != stored:
            return ChainCheck(False, count, row_id, "entry content does not match its hash")
        prev = stored
    return ChainCheck(True, count)
