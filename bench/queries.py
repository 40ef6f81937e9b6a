"""Supervisor queries on PostgreSQL: the escalation-log page with filters (keyset pagination) and the KPIs.

A dedicated database per size (`gdbench_queries_<incidents>`, kept between runs; rebuilt when its row counts
differ) holds the demo county plus generated history: `incidents` cases spread over two years (the newest
0.5 % still open), three escalation-log entries and one accept per case, all written by INSERT … SELECT
generate_series in SQL. A real `griddispatch serve` on that database answers a supervisor's
`GET /api/v1/escalations` (no filter; a township; a 7-day range; a reason; a tier; all of them; each followed
through two more pages with `cursor`) and `GET /api/v1/stats` (today; a township; a 7-day period).

Baseline in the same run: the same requests on a 10,000-case database. Target: p99 ≤ 100 ms.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import Figure, percentile
from tests import pg
from tests.server import Api, ServerProcess

TARGET_MS = 100.0
DAYS = 730
OPEN_SHARE = 0.005


def _generate(url: str, incidents: int) -> None:
    """The demo county (migrations + demo load), then the history, in SQL."""
    from sqlalchemy import text

    from dispatch.bootstrap import build
    from dispatch.settings import Settings

    c = build(Settings(database_url=url, data_dir=Path(tempfile.mkdtemp(prefix="gd-bench-q-"))))
    grids = sorted(code for code, u in c.tree.units.items() if u.level == "grid")
    params = {"n": incidents, "grids": grids, "days": DAYS, "open": int(incidents * (1 - OPEN_SHARE))}
    with c.db.engine.begin() as con:
        con.execute(text("SET LOCAL synchronous_commit = off"))
        con.execute(
            text(
                """
                INSERT INTO incident (id, county, workflow, workflow_version, source, category, severity, state,
                    tier, grid_code, grid_generation, near_boundary, lon, lat, description, photos, accepted,
                    departments, deadlines, overdue, rework_count, rating, closed_at, created_at,
                    stage_entered_at, updated_at, version)
                SELECT '360102-' || to_char(t.created, 'YYYYMMDD') || '-' || lpad(i::text, 7, '0'),
                    '360102', 'four_stage', 1, 'hotline',
                    (ARRAY['sanitation','municipal','dispute','public_security','illegal_building',
                           'livelihood'])[1 + i % 6],
                    'normal',
                    CASE WHEN i > :open THEN (ARRAY['grid_discovery','community_call','tiered_response',
                            'coordinated_handling','verification'])[1 + i % 5]
                         WHEN i % 50 = 0 THEN 'rejected' ELSE 'closed' END,
                    (ARRAY['grid','community','township','county'])[1 + i % 4],
                    g.code, 1, false, 115.9, 28.7, '生成的历史案件', '[]', true, '[]',
                    CASE WHEN i > :open THEN json_build_array(json_build_object(
                        'clock', 'resolve', 'started_at', t.created, 'due_at', t.created + interval '4 hours',
                        'warn_at', t.created + interval '192 minutes', 'unit', 'hours', 'limit_minutes', 240))
                    ELSE '[]'::json END,
                    '[]', (i % 7 = 0)::int, CASE WHEN i % 3 = 0 THEN 1 + i % 5 END,
                    CASE WHEN i <= :open AND i % 50 <> 0 THEN t.created + (i % 72) * interval '1 hour' END,
                    t.created, t.created, t.created, 1
                FROM generate_series(1, :n) AS i
                CROSS JOIN LATERAL (SELECT now() - (:n - i) * (:days * interval '1 day') / :n AS created) t
                CROSS JOIN LATERAL (SELECT (CAST(:grids AS text[]))[1 + i % cardinality(CAST(:grids AS text[]))] AS code) g
                """
            ),
            params,
        )
        con.execute(
            text(
                """
                INSERT INTO escalation_log (incident_id, seq, at, county, reason, actor, from_state, from_tier,
                    from_unit, to_state, to_tier, to_unit, late_seconds, note, prev_hash, hash)
                SELECT inc.id, k, inc.created_at + j * interval '20 minutes', '360102',
                    (ARRAY['urge','ack_timeout','supervise','manual','resolve_timeout','dept_timeout'])[1 + k % 6],
                    'system', 'grid_discovery', f.tier, f.unit, 'community_call', t.tier, t.unit,
                    CASE WHEN k % 6 IN (1, 4, 5) THEN 60 END, NULL, md5((k - 1)::text), md5(k::text)
                FROM generate_series(1, 3 * :n) AS k
                CROSS JOIN LATERAL (SELECT (k - 1) / 3 + 1 AS i, (k - 1) % 3 + 1 AS j) ij
                JOIN incident inc ON inc.id = '360102-' || to_char(now() - (:n - ij.i) * (:days * interval '1 day')
                    / :n, 'YYYYMMDD') || '-' || lpad(ij.i::text, 7, '0')
                CROSS JOIN LATERAL (SELECT
                    (ARRAY['grid','community','township'])[j] AS tier,
                    substr(inc.grid_code, 1, (ARRAY[15, 12, 9])[j]) AS unit) f
                CROSS JOIN LATERAL (SELECT
                    (ARRAY['community','township','county'])[j] AS tier,
                    substr(inc.grid_code, 1, (ARRAY[12, 9, 6])[j]) AS unit) t
                ORDER BY k
                """
            ),
            params,
        )
        con.execute(
            text(
                """
                INSERT INTO timeline (incident_id, seq, at, actor, action, from_state, to_state, tier, data,
                    prev_hash, hash)
                SELECT id, 0, created_at + interval '7 minutes', 'grid', 'accept', 'grid_discovery',
                    'grid_discovery', 'grid', '{}', '', ''
                FROM incident WHERE id LIKE '360102-%-_______'
                """
            )
        )
    with c.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
        con.execute(text("VACUUM ANALYZE"))
    c.db.dispose()


def _database(server: pg.Server, incidents: int) -> str:
    """The URL of the dedicated database for this size, generated when missing or incomplete."""
    import psycopg

    name = f"gdbench_queries_{incidents}"
    url = server.url(name)
    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3) as con:
            have = con.execute("SELECT count(*) FROM incident WHERE id LIKE '360102-%-_______'").fetchone()
            logs = con.execute("SELECT count(*) FROM escalation_log").fetchone()
        if have and have[0] == incidents and logs and logs[0] >= 3 * incidents:
            return url
    except psycopg.Error:
        pass
    print(f"generating {incidents:,} cases and {3 * incidents:,} log entries in {name} …", flush=True)
    started = time.perf_counter()
    server.create(name)
    _generate(url, incidents)
    print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return url


def _requests(township: str) -> list[tuple[str, dict[str, str]]]:
    now = datetime.now(UTC)
    week = {"since": (now - timedelta(days=30)).isoformat(), "until": (now - timedelta(days=23)).isoformat()}
    pages = [
        {},
        {"jurisdiction": township},
        week,
        {"reason": "manual"},
        {"tier": "county"},
        {"jurisdiction": township, "reason": "ack_timeout", "tier": "community", **week},
    ]
    out = [("/escalations", {**p, "limit": "100"}) for p in pages]
    stats = [{}, {"jurisdiction": township}, {"since": week["since"], "until": week["until"]}]
    return out + [("/stats", s) for s in stats]


by_kind: dict[str, list[float]] = {}  # /stats latencies of the last _measure, by request


def _kind(params: dict[str, str]) -> str:
    return "7-day period" if "since" in params else ("township" if params else "today")


def _measure(url: str, rounds: int) -> tuple[list[float], list[float], int]:
    """Latencies (ms) of the escalation pages (following `next_cursor` twice) and of /stats."""
    data = Path(tempfile.mkdtemp(prefix="gd-bench-queries-"))
    server = ServerProcess(
        data, database_url=url, access_log="false", log_json="false", rate_per_token=0, rate_per_ip=0
    ).start(timeout=600)  # the first start on a big database may build indexes (migrations)
    try:
        api = Api(server.url)
        headers = api.headers("supervisor")
        township = api.get("supervisor", "/grids/locate", lon=115.9057, lat=28.7639).json()
        code = (township.get("grid") or township).get("code", "360102001001001")[:9]
        escal, stats, rows = [], [], 0
        by_kind.clear()
        with httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=120) as http:
            for path, params in _requests(code):  # warm-up
                http.get(path, params=params).raise_for_status()
            for _ in range(rounds):
                for path, params in _requests(code):
                    cursor = None
                    for _page in range(3 if path == "/escalations" else 1):
                        query = {**params, **({"cursor": str(cursor)} if cursor else {})}
                        t0 = time.perf_counter()
                        r = http.get(path, params=query)
                        took = (time.perf_counter() - t0) * 1000
                        r.raise_for_status()
                        if path == "/escalations":
                            escal.append(took)
                            body = r.json()
                            rows += len(body["items"])
                            cursor = body["next_cursor"]
                            if cursor is None:
                                break
                        else:
                            stats.append(took)
                            by_kind.setdefault(_kind(params), []).append(took)
        return escal, stats, rows
    finally:
        server.stop()


def run(quick: bool = False) -> list[Figure]:
    server = pg.Server.from_env()
    reason = server.unreachable()
    if reason:
        raise RuntimeError(f"PostgreSQL is not reachable: {reason}")
    big_n, small_n, rounds = (20_000, 10_000, 2) if quick else (1_000_000, 10_000, 8)
    small = _database(server, small_n)
    big = _database(server, big_n)
    s_escal, s_stats, _ = _measure(small, rounds)
    b_escal, b_stats, rows = _measure(big, rounds)
    kinds = ", ".join(f"{k} p50 {percentile(v, 50):.0f} ms" for k, v in by_kind.items())
    note = (
        f"{big_n:,} cases / {3 * big_n:,} log entries vs {small_n:,} / {3 * small_n:,}; supervisor; "
        f"{len(b_escal)} escalation pages ({rows} rows), {len(b_stats)} stats calls ({kinds})"
    )
    e99, st99 = percentile(b_escal, 99), percentile(b_stats, 99)
    return [
        Figure(
            f"queries: escalations p99 ({big_n:,} cases)",
            e99,
            "ms",
            f"same on {small_n:,} cases",
            percentile(s_escal, 99),
            f"≤ {TARGET_MS:.0f} ms",
            e99 <= TARGET_MS,
            note,
        ),
        Figure(
            f"queries: stats p99 ({big_n:,} cases)",
            st99,
            "ms",
            f"same on {small_n:,} cases",
            percentile(s_stats, 99),
            f"≤ {TARGET_MS:.0f} ms",
            st99 <= TARGET_MS,
        ),
    ]


if __name__ == "__main__":
    for f in run(quick="--quick" in sys.argv):
        print(f.as_dict())
