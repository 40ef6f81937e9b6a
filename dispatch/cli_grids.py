"""`griddispatch grids …`: boundary import, check, export."""

from __future__ import annotations

import typer

app = typer.Typer(help="Grid boundaries: import, check, export.", no_args_is_help=True)
