"""The benchmark suite: every figure beside its baseline measured in the same run, and the ratio.

    .venv/bin/python -m bench [--quick] [--only ingest,fanout,...]
    griddispatch bench [--quick] [--only ...]

Prints one table and writes bench/results/latest.json. On a noisy machine read the ratios, not the absolutes.
`--quick` (under 2 minutes, run by tests/test_bench_quick.py) uses small sizes so the suite keeps working; its
numbers are not the targets' numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import Figure, save

SUITE = ("ingest", "fanout", "timers", "startup", "queries", "geofence")


def run_suite(quick: bool, only: list[str] | None = None, console: Console | None = None) -> list[Figure]:
    console = console or Console()
    figures: list[Figure] = []
    for name in only or SUITE:
        started = time.perf_counter()
        console.print(f"[bold]{name}[/] …")
        try:
            got = importlib.import_module(f"bench.{name}").run(quick)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            got = [
                Figure(f"{name}: failed", math.nan, "", note=f"{type(exc).__name__}: {exc}"[:300], met=False)
            ]
        console.print(f"[dim]{name} took {time.perf_counter() - started:.0f} s[/]")
        figures.extend(got)
    return figures


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(figures: list[Figure], title: str) -> Table:
    t = Table(title=title)
    for col in ("figure", "value", "unit", "baseline", "baseline value", "ratio", "target", "met"):
        t.add_column(col, justify="right" if col in ("value", "baseline value", "ratio") else "left")
    for f in figures:
        met = "" if f.met is None else ("[green]yes[/]" if f.met else "[red]no[/]")
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else ""
        t.add_row(f.name, _num(f.value), f.unit, f.baseline_name, _num(f.baseline), ratio, f.target, met)
    return t


def markdown(figures: list[dict[str, object]]) -> str:
    """The table of a results file as Markdown (for the README)."""
    lines = [
        "| figure | value | unit | baseline | baseline value | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        ratio = f"{f['ratio']:.2f}×" if f["ratio"] is not None else ""
        met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
        lines.append(
            f"| {f['name']} | {_num(f['value'])} | {f['unit']} | {f['baseline_name']} | "  # type: ignore[arg-type]
            f"{_num(f['baseline'])} | {ratio} | {f['target']} | {met} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes (CI)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SUITE)}")
    parser.add_argument("--markdown", type=Path, help="print a results file as a Markdown table and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        return 0
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    unknown = set(only or ()) - set(SUITE)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    console = Console(width=max(160, Console().width))
    started = time.perf_counter()
    figures = run_suite(args.quick, only, console)
    load = os.getloadavg()
    title = (
        f"griddispatch bench{' --quick' if args.quick else ''}: {os.cpu_count()} cores, "
        f"load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, {time.perf_counter() - started:.0f} s"
    )
    console.print(table(figures, title))
    for f in figures:
        if f.note:
            console.print(f"[dim]{f.name}: {f.note}[/]")
    path = save(figures)
    console.print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
