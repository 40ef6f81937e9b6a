"""Structured JSON logs with a request id that follows a case through HTTP, timers and webhooks.

Two context variables travel with the work: `request_id` (taken from the caller's `X-Request-Id` or made
here) and `incident_id`. asyncio tasks and `asyncio.to_thread` copy the context, so a line logged deep
inside the service during an HTTP request carries the request's id. Work that does not start with a request
(a webhook delivery, a deadline firing) binds its own id and the case's id, so grepping one incident id
finds every line about the case, and grepping a request id finds everything one call caused.

Phone numbers and secrets never reach the log: the formatter masks mobile numbers, bearer tokens, JWTs and
`api_key`/`secret`/`password` values in the message and in every extra field.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
incident_id_var: ContextVar[str | None] = ContextVar("incident_id", default=None)

_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")  # mainland mobile numbers
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3}-?)\d{7,8}(?!\d)")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SECRET_PARAM = re.compile(r"(?i)\b(api_key|apikey|token|access_token|secret|password)=([^&\s\"']+)")
_SECRET_FIELDS = frozenset({"api_key", "token", "access_token", "secret", "password", "authorization"})
# LogRecord attributes that are not "extra" fields.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def new_request_id() -> str:
    return secrets.token_hex(8)


def redact(text: str) -> str:
    text = _JWT.sub("[jwt]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _SECRET_PARAM.sub(r"\1=[redacted]", text)
    text = _PHONE.sub(r"\1****\2", text)
    return _LANDLINE.sub(r"\1********", text)


def _clean(key: str, value: Any) -> Any:
    if key.lower() in _SECRET_FIELDS:
        return "[redacted]"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean("", v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, incident_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        rid, iid = request_id_var.get(), incident_id_var.get()
        if rid:
            out["request_id"] = rid
        if iid:
            out["incident_id"] = iid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = _clean(key, value)
        if record.exc_info:
            out["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send every logger (uvicorn's included) through the JSON formatter on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our access line (api/metrics.py) has the route, the status and the request id; uvicorn's repeats it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@contextlib.contextmanager
def bound(request_id: str | None = None, incident_id: str | None = None) -> Iterator[str]:
    """Bind a request id (a new one if none is given) and optionally a case for the enclosed work."""
    rid = request_id or new_request_id()
    t1 = request_id_var.set(rid)
    t2 = incident_id_var.set(incident_id) if incident_id else None
    try:
        yield rid
    finally:
        if t2 is not None:
            incident_id_var.reset(t2)
        request_id_var.reset(t1)


def bind_incident(incident_id: str | None) -> None:
    """Name the case the current request or task is about (kept until the context ends)."""
    if incident_id:
        incident_id_var.set(incident_id)


def trace_timers(runner: Any, db: Any) -> None:
    """Give each deadline firing its own request id (`timer-<deadline id>`) and the case it belongs to, so
    the lines it causes (service, engine, webhooks it wakes) carry them. Wraps the runner's `fire`."""
    from dispatch import models as m

    fire = runner.fire

    async def traced(deadline_id: int, due: Any) -> None:
        import asyncio

        def case_of() -> str | None:
            with db.read() as s:
                row = s.get(m.DeadlineRow, deadline_id)
                return row.incident_id if row else None

        incident_id = await asyncio.to_thread(case_of)
        with bound(f"timer-{deadline_id}", incident_id):
            logging.getLogger("griddispatch.timers").info("deadline %s due", deadline_id)
            await fire(deadline_id, due)

    runner.fire = traced
