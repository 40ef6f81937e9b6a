"""What every benchmark shares: a figure with its in-run baseline, a demo database, and an HTTP load driver."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


@dataclass
class Figure:
    """One line of the suite's table: a measured value, its baseline measured in the same run, the ratio."""

    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


_demo_db: Path | None = None


def demo_database() -> Path:
    """A demo county database (东湖区), built once per bench run and copied for each server."""
    global _demo_db
    if _demo_db is None:
        from dispatch.bootstrap import build
        from dispatch.clock import FakeClock
        from dispatch.settings import Settings

        directory = Path(tempfile.mkdtemp(prefix="gd-bench-template-"))
        container = build(Settings(data_dir=directory), clock=FakeClock())
        container.db.dispose()
        _demo_db = directory / "griddispatch.sqlite3"
    return _demo_db


def fresh_data_dir(tag: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"gd-bench-{tag}-"))
    shutil.copy(demo_database(), directory / "griddispatch.sqlite3")
    return directory


@dataclass
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_post(url: str, bodies: list[str], token: str | None, seconds: float, connections: int) -> LoadResult:
    """Drive POSTs with wrk (one thread; the other core serves). Bodies rotate so reports land all over."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua_bodies = ",\n".join("[==[" + b + "]==]" for b in bodies)
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    script.write_text(
        "wrk.method = \"POST\"\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        + auth
        + "local bodies = {\n" + lua_bodies + "\n}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])\n"
        "end\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    script.unlink(missing_ok=True)
    try:
        return _parse_wrk(out, seconds)
    except (AttributeError, ValueError) as exc:
        raise RuntimeError(f"could not read wrk's output:\n{out}") from exc


def _ms(text: str) -> float:
    found = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:  # "-nan" when nothing was answered
        return float("nan")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _parse_wrk(out: str, seconds: float) -> LoadResult:
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    took = re.search(r"requests in ([\d.]+)(ms|s|m)", out)
    duration = float(took.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[took.group(2)] if took else seconds
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return LoadResult(requests, duration, non_2xx, errors, p50, p99)


def save(figures: list[Figure], name: str = "latest") -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps([f.as_dict() for f in figures], ensure_ascii=False, indent=2), encoding="utf-8")
    return path
