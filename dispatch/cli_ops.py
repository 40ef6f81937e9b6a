"""CLI for interoperability and operations (issue 8): `apikeys`, `webhooks`, `simulate`, `report`.

Registered on the main app by dispatch/cli.py; heavy modules (httpx traffic, matplotlib) are imported only
when their command runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatch.settings import Settings

console = Console()
apikeys_app = typer.Typer(help="Open311 API keys for hotline / 311 systems (GeoReport `api_key`).")
webhooks_app = typer.Typer(help="Outbound webhooks: subscriptions, the delivery log, replay.")


def register(app: typer.Typer) -> None:
    app.add_typer(apikeys_app, name="apikeys")
    app.add_typer(webhooks_app, name="webhooks")
    app.command("simulate")(simulate)
    app.command("report")(report)


def _db():  # type: ignore[no-untyped-def]
    from dispatch.db import Database

    db = Database(Settings().resolved_database_url)
    db.migrate()
    return db


@apikeys_app.command("add")
def apikeys_add(
    label: Annotated[str, typer.Argument(help="the client system's name, e.g. hotline-12345")],
    county: Annotated[str, typer.Option(help="county code the key files cases for")],
) -> None:
    """Make a key; it is printed once and only its hash is kept."""
    from dispatch.clock import SystemClock
    from dispatch.open311_keys import add_key

    key = add_key(_db(), label, county, SystemClock().now())
    console.print(f"api_key for {label} ({county}): [bold]{key}[/]")


@apikeys_app.command("list")
def apikeys_list() -> None:
    from dispatch.open311_keys import list_keys

    table = Table("label", "county", "created", "active")
    for k in list_keys(_db()):
        table.add_row(k.label, k.county, k.created_at.isoformat(timespec="seconds"), str(k.active))
    console.print(table)


@apikeys_app.command("revoke")
def apikeys_revoke(label: str) -> None:
    from dispatch.open311_keys import revoke_key

    if not revoke_key(_db(), label):
        console.print(f"[red]no key labelled {label}[/]")
        raise typer.Exit(1)
    console.print(f"revoked {label}")


@webhooks_app.command("add")
def webhooks_add(
    url: str,
    events: Annotated[
        list[str] | None, typer.Option("--event", help="event type or prefix.*; repeat")
    ] = None,
    jurisdiction: Annotated[str | None, typer.Option(help="only events under this code")] = None,
) -> None:
    """Subscribe a URL; prints the signing secret once."""
    from dispatch.webhooks import add_subscription

    sub = add_subscription(_db(), url, "cli", events or [], jurisdiction)
    console.print(f"subscription {sub.id} → {url}; secret: [bold]{sub.secret}[/]")


@webhooks_app.command("list")
def webhooks_list() -> None:
    from dispatch.webhooks import subscriptions

    table = Table("id", "url", "events", "jurisdiction", "cursor", "active")
    for s in subscriptions(_db(), include_inactive=True):
        table.add_row(
            str(s.id),
            s.url,
            ",".join(s.event_types) or "*",
            s.jurisdiction or "*",
            str(s.cursor),
            str(s.active),
        )
    console.print(table)


@webhooks_app.command("log")
def webhooks_log(
    subscription: Annotated[int | None, typer.Option(help="subscription id")] = None,
    status: Annotated[str | None, typer.Option(help="pending | delivered | dead")] = None,
    limit: int = 50,
) -> None:
    """The delivery log: every attempt of the newest deliveries."""
    from dispatch.webhooks import delivery_log

    table = Table("delivery", "seq", "type", "status", "attempt", "at", "result")
    for d in delivery_log(_db(), subscription, status, limit):
        for a in d["log"] or [{"attempt": "-", "at": "", "status_code": None, "error": None}]:
            result = str(a["status_code"]) if a["status_code"] is not None else (a["error"] or "")
            table.add_row(
                str(d["id"]),
                str(d["event_seq"]),
                d["event_type"],
                d["status"],
                str(a["attempt"]),
                a["at"] or "",
                result,
            )
    console.print(table)


@webhooks_app.command("replay")
def webhooks_replay(
    subscription: int,
    since: Annotated[int | None, typer.Option(help="replay events after this seq")] = None,
    until: Annotated[int | None, typer.Option(help="…up to and including this seq")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="only re-queue dead letters")] = False,
) -> None:
    """Queue deliveries again; a running server's worker sends them."""
    from dispatch.webhooks import replay

    try:
        count = replay(_db(), subscription, since, until, dead)
    except LookupError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    console.print(f"queued {count} deliveries for subscription {subscription}")


def simulate(
    url: Annotated[str, typer.Option(help="the running server")] = "http://127.0.0.1:8000",
    days: Annotated[float, typer.Option(help="simulated days of traffic")] = 1.0,
    per_day: Annotated[float, typer.Option(help="mean reports per day")] = 40.0,
    unanswered: Annotated[float, typer.Option(help="share of cases left unanswered so they escalate")] = 0.2,
    speed: Annotated[
        float, typer.Option(help="the server's GRIDDISPATCH_CLOCK_SPEED (simulated seconds per real second)")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="same seed, same traffic")] = 1,
    password: Annotated[str, typer.Option(help="password of the demo logins")] = "demo1234",
) -> None:
    """Drive realistic report traffic at a running server: Poisson arrivals with a daily profile, a category
    mix, a share of cases nobody answers (they escalate), department work, verification and ratings."""
    from dispatch.simulate import SimulationConfig, run

    config = SimulationConfig(days=days, per_day=per_day, unanswered=unanswered, seed=seed)
    summary = run(config, url, speed=speed, password=password, console=console)
    console.print(summary.table())


def report(
    out: Annotated[Path, typer.Option(help="where to write the HTML report")] = Path("weekly-report.html"),
    jurisdiction: Annotated[
        str | None, typer.Option(help="county or lower code (default: every county)")
    ] = None,
    week_ending: Annotated[
        datetime | None, typer.Option(help="end of the 7-day period (default: now on the service clock)")
    ] = None,
) -> None:
    """Write the weekly supervisor report (HTML with matplotlib charts embedded as PNG)."""
    from dispatch.bootstrap import build
    from dispatch.report import write_report

    container = build(Settings())
    path = write_report(container, out, jurisdiction, week_ending)
    console.print(f"wrote {path}")
