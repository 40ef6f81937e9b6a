"""`griddispatch` command line (typer + rich)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatch.settings import Settings

app = typer.Typer(
    help="griddispatch: grid-governance event dispatch engine (网格化治理事件调度引擎)", no_args_is_help=True
)
users_app = typer.Typer(help="Manage logins.")
log_app = typer.Typer(help="The escalation log (升级日志).")
workflows_app = typer.Typer(help="Workflow definitions.")
app.add_typer(users_app, name="users")
app.add_typer(log_app, name="log")
app.add_typer(workflows_app, name="workflows")


def _grids_app() -> typer.Typer:
    from dispatch.cli_grids import app as grids

    return grids


app.add_typer(_grids_app(), name="grids")


def _ops_apps() -> None:
    """Interoperability and operations (issue 8): apikeys, webhooks, simulate, report; imported lazily."""
    from dispatch.cli_ops import register

    register(app)


_ops_apps()
console = Console()

ROLES = [
    "grid_worker",
    "community_staff",
    "township_staff",
    "county_dispatcher",
    "department_staff",
    "supervisor",
    "admin",
]


def _container(settings: Settings):  # type: ignore[no-untyped-def]
    from dispatch.bootstrap import build

    with console.status("preparing the database…"):
        return build(settings, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="bind address (default GRIDDISPATCH_HOST or 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default GRIDDISPATCH_PORT or 8000)")] = None,
) -> None:
    """Run the server on the embedded default (SQLite file; demo county loaded on first start)."""
    import uvicorn

    from api.app import create_app
    from dispatch.bootstrap import demo_logins
    from fixtures.demo_county import DEMO_PASSWORD

    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    container = _container(settings)
    table = Table(title=f"demo logins (password: {DEMO_PASSWORD})")
    for col in ("username", "role", "unit / department", "name"):
        table.add_column(col)
    for row in demo_logins(container.db):
        table.add_row(*row)
    console.print(table)
    console.print(f"database: {settings.resolved_database_url}")
    console.print(
        f"grids: {len(container.tree.index)} in generation {container.tree.generation}; clock speed ×{settings.clock_speed:g}"
    )
    url = f"http://{settings.host}:{settings.port}"
    console.print(
        f"[bold green]griddispatch serving at {url}[/]  (API docs: {url}/docs, events: ws://{settings.host}:{settings.port}/ws/events)"
    )
    if settings.log_json:  # structured JSON lines with request and case ids (dispatch/logs.py)
        from dispatch.logs import configure

        configure()
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings, container=container),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None if settings.log_json else uvicorn.config.LOGGING_CONFIG,
        ws_per_message_deflate=False,
        access_log=settings.access_log,
        ws_max_size=settings.ws_max_message_bytes,
    )


@app.command()
def init() -> None:
    """Create or upgrade the database schema (Alembic migrations; safe to run while servers start) and load
    the demo county unless GRIDDISPATCH_DEMO=false. GRIDDISPATCH_DATABASE_URL=postgresql://… for scale-out."""
    settings = Settings()
    _container(settings)
    console.print(f"ready: {settings.resolved_database_url}")


@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
    unit: Annotated[str | None, typer.Option(help="jurisdiction code the user is bound to")] = None,
    department: Annotated[str | None, typer.Option(help="department code (department_staff)")] = None,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
) -> None:
    """Add a login."""
    from dispatch import models as m
    from dispatch.auth import hash_password

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}")
    if role == "department_staff" and not department:
        raise typer.BadParameter("department_staff needs --department")
    if role != "department_staff" and not unit:
        raise typer.BadParameter("this role needs --unit (a jurisdiction code)")
    if len(password) < 8:
        raise typer.BadParameter("password must have at least 8 characters")
    container = _container(Settings())
    with container.db.write() as s:
        if s.get(m.User, username) is not None:
            console.print(f"[red]user {username} exists[/]")
            raise typer.Exit(1)
        s.add(
            m.User(
                username=username,
                display_name=name or username,
                password_hash=hash_password(password),
                role=role,
                unit_code=unit,
                department=department,
            )
        )
    console.print(f"added {username} ({role})")


@log_app.command("verify")
def log_verify() -> None:
    """Check the hash chains of the escalation log and of every case's timeline; exit 1 and name the first
    broken entry if anything was edited, deleted or reordered."""
    from dispatch.queries import verify_escalation_log, verify_timelines

    container = _container(Settings())
    check = verify_escalation_log(container.db)
    timelines, case = verify_timelines(container.db)
    if check.ok:
        console.print(f"[green]escalation log intact[/]: {check.entries} entries")
    else:
        console.print(f"[red]escalation log broken at entry {check.first_broken_id}[/]: {check.problem}")
    if timelines.ok:
        console.print(f"[green]case timelines intact[/]: {timelines.entries} entries")
    else:
        console.print(
            f"[red]timeline of {case} broken at entry {timelines.first_broken_id}[/]: {timelines.problem}"
        )
    if not (check.ok and timelines.ok):
        raise typer.Exit(1)


@workflows_app.command("show")
def workflows_show(
    name: Annotated[str, typer.Argument(help="workflow name")] = "four_stage",
    format: Annotated[str, typer.Option("--format", help="table | mermaid")] = "table",
) -> None:
    """Print a workflow: its transitions as a table, or its state diagram as Mermaid."""
    from workflows.definition import load_all
    from workflows.machine import mermaid

    found = [d for (n, _), d in sorted(load_all().items(), key=lambda kv: kv[0]) if n == name]
    if not found:
        console.print(f"[red]no workflow {name}[/]")
        raise typer.Exit(1)
    d = found[-1]
    if format == "mermaid":
        sys.stdout.write(mermaid(d) + "\n")
        return
    if format != "table":
        raise typer.BadParameter("format must be table or mermaid")
    table = Table(title=f"{d.name} v{d.version}: {d.title}")
    for col in ("action", "from", "to", "roles", "conditions"):
        table.add_column(col)
    for t in d.transitions:
        table.add_row(t.trigger, t.source, t.dest or "(same)", ", ".join(t.roles), ", ".join(t.conditions))
    console.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite (bench/, from a source checkout): `griddispatch bench [--quick] [--only a,b]`."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "__main__.py").exists():
        console.print("[red]the benchmark suite lives in the source checkout (bench/); run it from there[/]")
        raise typer.Exit(1)
    sys.path.insert(0, str(root))
    from bench.__main__ import main as bench_main

    raise typer.Exit(bench_main(list(ctx.args)))


if __name__ == "__main__":
    app()
