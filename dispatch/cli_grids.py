"""`griddispatch grids …`: boundary import, check, export, list, diff, activate.

A generation activated here is written to the database; a server already running on that database keeps
routing by the set it loaded until it restarts, or until an admin calls
`POST /api/v1/grids/generations/{id}/activate` on it (which swaps the set live).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dispatch.settings import Settings

app = typer.Typer(help="Grid boundaries: import, check, export, list, diff, activate.", no_args_is_help=True)
console = Console()

Crs = Annotated[
    str | None, typer.Option(help="the file's CRS when it declares none or a wrong one, e.g. EPSG:4547")
]
CoordSys = Annotated[
    str, typer.Option(help="lon/lat offsets of the file: wgs84, gcj02 (AMap/Tencent) or bd09 (Baidu)")
]
Tolerance = Annotated[
    float, typer.Option(help="overlaps, gaps and overhangs up to this many m² are not errors")
]
AsJson = Annotated[bool, typer.Option("--json", help="print the validation report as JSON")]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _database():  # type: ignore[no-untyped-def]
    from dispatch.db import Database

    db = Database(Settings().resolved_database_url)
    db.migrate()
    return db


def _read_and_validate(path: Path, crs: str | None, coord_sys: str, tolerance: float):  # type: ignore[no-untyped-def]
    from grids.importer import BoundaryFileError, read_boundary_file
    from grids.validate import validate_units

    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"reading {path.name}", total=None)
        try:
            units = read_boundary_file(
                path,
                crs=crs,
                coord_sys=coord_sys,
                progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
        except BoundaryFileError as exc:
            console.print(f"[red]{exc.code}[/red]: {exc.detail}")
            raise typer.Exit(2) from None
    read_s = time.perf_counter() - started
    with console.status(f"validating {len(units):,} units…"):
        started = time.perf_counter()
        report = validate_units(units, tolerance)
    console.print(f"[dim]read in {read_s:.1f} s, validated in {time.perf_counter() - started:.1f} s[/dim]")
    return units, report


def _print_report(report, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
        return
    counts = ", ".join(f"{n:,} {level}" for level, n in report.units.items())
    console.print(f"units: {counts}; area tolerance {report.tolerance_m2} m²")
    if report.issues:
        table = Table("severity", "check", "units", "where (lon, lat)", "area m²", "message")
        for issue in report.issues[:200]:
            colour = "red" if issue.severity == "error" else "yellow"
            table.add_row(
                f"[{colour}]{issue.severity}[/{colour}]",
                issue.check,
                ", ".join(issue.codes[:3]) + ("…" if len(issue.codes) > 3 else ""),
                f"{issue.location[0]:.6f}, {issue.location[1]:.6f}" if issue.location else "",
                f"{issue.area_m2:,.1f}" if issue.area_m2 is not None else "",
                issue.message,
            )
        console.print(table)
        if len(report.issues) > 200:
            console.print(f"… and {len(report.issues) - 200} more (use --json for all)")
    verdict = "[green]valid[/green]" if report.ok else "[red]refused[/red]"
    console.print(f"{verdict}: {len(report.errors)} errors, {len(report.warnings)} warnings")


@app.command()
def check(
    path: Path,
    crs: Crs = None,
    coord_sys: CoordSys = "wgs84",
    tolerance: Tolerance = 1.0,
    as_json: AsJson = False,
) -> None:
    """Validate a boundary file without storing anything (exit code 1 when it has errors)."""
    _units, report = _read_and_validate(path, crs, coord_sys, tolerance)
    _print_report(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


@app.command("import")
def import_(
    path: Path,
    crs: Crs = None,
    coord_sys: CoordSys = "wgs84",
    tolerance: Tolerance = 1.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and report only")] = False,
    activate: Annotated[bool, typer.Option(help="activate the new generation when it validates")] = True,
    note: Annotated[str, typer.Option(help="what this generation is")] = "",
    as_json: AsJson = False,
) -> None:
    """Import a boundary file as a new generation; errors refuse it and the active set keeps routing."""
    units, report = _read_and_validate(path, crs, coord_sys, tolerance)
    _print_report(report, as_json)
    if dry_run or not report.ok:
        raise typer.Exit(0 if report.ok else 1)
    from grids import generations

    db = _database()
    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("storing units", total=len(units))
        gen = generations.store_generation(
            db,
            units,
            report,
            note=note or f"imported from {path.name}",
            now=datetime.now(UTC),
            progress=lambda n, total: bar.update(task, completed=n, total=total),
        )
    console.print(f"generation {gen} stored in {time.perf_counter() - started:.1f} s")
    if activate:
        started = time.perf_counter()
        generations.load_tree(
            db, gen
        )  # the same build a server does: proves the set indexes before it counts
        generations.mark_active(db, gen)
        console.print(
            f"generation {gen} is active (index built in {time.perf_counter() - started:.1f} s); a server "
            "already running picks it up on restart or via POST /api/v1/grids/generations/{id}/activate"
        )
    db.dispose()


@app.command("list")
def list_() -> None:
    """Stored generations, the active one marked."""
    from grids import generations

    db = _database()
    table = Table("id", "active", "created", "counties", "units", "grids", "note")
    for g in generations.list_generations(db):
        counties = g.county if len(g.county) <= 30 else f"{g.county.count(',') + 1} counties"
        table.add_row(
            str(g.id), "●" if g.active else "", g.created_at.isoformat(timespec="seconds"), counties,
            f"{g.units:,}", f"{g.grids:,}", g.note,
        )  # fmt: skip
    console.print(table)
    db.dispose()


@app.command()
def activate(generation: int) -> None:
    """Make a stored generation the active one (also the way back to an earlier one)."""
    from grids import generations

    db = _database()
    if not generations.exists(db, generation):
        console.print(f"[red]no grid generation {generation}[/red]")
        raise typer.Exit(1)
    generations.load_tree(db, generation)
    generations.mark_active(db, generation)
    console.print(
        f"generation {generation} is active (running servers: restart or use the HTTP activate call)"
    )
    db.dispose()


@app.command()
def diff(old: int, new: int, as_json: AsJson = False) -> None:
    """Units added, removed, reshaped or renamed between two generations."""
    from grids import generations

    db = _database()
    result = generations.diff_generations(db, old, new)
    db.dispose()
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    console.print(
        f"{old} → {new}: {len(result['added'])} added, {len(result['removed'])} removed, "
        f"{len(result['reshaped'])} reshaped, {len(result['renamed'])} renamed, {result['unchanged']} unchanged"
    )
    for kind in ("added", "removed", "reshaped", "renamed"):
        for item in result[kind][:50]:
            console.print(f"  {kind:9} {item}")


@app.command()
def export(
    path: Path,
    generation: Annotated[int | None, typer.Option(help="default: the active generation")] = None,
    level: Annotated[str | None, typer.Option(help="county, township, community or grid")] = None,
    simplify: Annotated[float, typer.Option(help="display tolerance in metres (0: exact)")] = 0.0,
) -> None:
    """Write a generation as a boundary file (.geojson, .gpkg or zipped Shapefile .zip)."""
    import shapely

    from grids import generations
    from grids.importer import write_boundary_file

    db = _database()
    gen = generation or generations.active_generation(db)
    if gen is None or not generations.exists(db, gen):
        console.print("[red]no such generation[/red]")
        raise typer.Exit(1)
    rows = generations.unit_rows(db, gen, level=level)
    with _progress() as bar:
        task = bar.add_task(f"writing {path.name}", total=len(rows))
        geoms = shapely.from_wkb([r[4] for r in rows])
        bar.update(task, completed=len(rows) // 2)
        count = write_boundary_file(
            path,
            ((c, n, lv, p, g) for (c, n, lv, p, _), g in zip(rows, geoms, strict=True)),
            simplify_m=simplify,
        )
        bar.update(task, completed=len(rows))
    console.print(f"{count:,} units of generation {gen} written to {path}")
    db.dispose()
