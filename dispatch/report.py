"""`griddispatch report`: the weekly supervisor report (督查周报) as one self-contained HTML file.

The KPIs are the ones of `GET /stats` (dispatch/stats.py, same definitions) over the seven days ending at
`week_ending`; charts are drawn with matplotlib (Agg) and embedded as base64 PNGs, so the file can be mailed
or archived as is. Contents: on-time closure rate, escalation rate by tier, 返工率, mean time to accept and to
resolve, satisfaction, reports/closures/escalations per day, top categories, the grids that ran out of time
most often, and the open cases by light at the end of the period.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dispatch.bootstrap import Container
from dispatch.clock import utc
from dispatch.domain import Actor
from dispatch.stats import LOCAL_TZ, TIERS, Period, compute_stats, daily_kpis, grid_ranking

REPORTER = Actor("weekly-report", "admin", None)  # reads every county (or the one asked for)
FONTS = ["Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "Source Han Sans SC", "DejaVu Sans"]
TIER_ZH = {"grid": "网格", "community": "社区", "township": "街道", "county": "县"}


def week_period(end: datetime) -> Period:
    end = utc(end)
    return Period(end - timedelta(days=7), end)


def gather(
    container: Container, jurisdiction: str | None = None, week_ending: datetime | None = None
) -> dict[str, Any]:
    """Every number the report shows (tests check these against hand-computed values)."""
    now = container.clock.now()
    period = week_period(week_ending or now)
    db, tree = container.db, container.tree
    stats = compute_stats(db, REPORTER, period.until, jurisdiction, period)
    return {
        "jurisdiction": jurisdiction,
        "jurisdiction_name": tree.name(jurisdiction) if jurisdiction else "全部县区",
        "period": period,
        "kpis": stats["period_kpis"],
        "open": stats["open"],
        "daily": daily_kpis(db, REPORTER, period, jurisdiction),
        "worst_grids": grid_ranking(db, REPORTER, period, tree, jurisdiction, limit=10),
        "categories": container.categories,
    }


# ---------------------------------------------------------------- charts


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.sans-serif"] = FONTS
    plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def _png(fig: Any) -> str:
    plt = _figure()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing CJK glyph on a bare machine is not worth a traceback
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def chart_daily(daily: list[dict[str, Any]]) -> str:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    days = [d["date"][5:] for d in daily]
    xs = range(len(days))
    ax.bar([x - 0.2 for x in xs], [d["reports"] for d in daily], width=0.4, label="上报 reports")
    ax.bar([x + 0.2 for x in xs], [d["closed"] for d in daily], width=0.4, label="结案 closed")
    ax.plot(list(xs), [d["escalations"] for d in daily], "o-", color="#c0392b", label="升级 escalations")
    ax.set_xticks(list(xs), days)
    ax.set_title("每日事件 Cases per day")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def chart_tiers(by_tier: dict[str, dict[str, Any]]) -> str:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3))
    rates = [(by_tier[t]["rate"] or 0) * 100 for t in TIERS]
    ax.bar([f"{TIER_ZH[t]}\n{t}" for t in TIERS], rates, color="#e67e22")
    ax.set_ylabel("%")
    ax.set_ylim(0, max(100, *rates))
    ax.set_title("各层级升级率 Escalation rate by tier")
    return _png(fig)


def chart_bars(labels: list[str], values: list[float], title: str, colour: str) -> str:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(labels), 2) + 1))
    ax.barh(labels[::-1], values[::-1], color=colour)
    ax.set_title(title)
    return _png(fig)


def chart_lights(by_light: dict[str, int]) -> str:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(3.6, 3))
    colours = {"green": "#27ae60", "yellow": "#f1c40f", "red": "#c0392b"}
    values = [by_light.get(k, 0) for k in colours]
    if sum(values):
        ax.pie(
            values,
            labels=[f"{k} {v}" for k, v in zip(colours, values, strict=True)],
            colors=list(colours.values()),
        )
    else:
        ax.text(0.5, 0.5, "no open cases", ha="center")
        ax.axis("off")
    ax.set_title("在办事件亮灯 Open cases by light")
    return _png(fig)


# ---------------------------------------------------------------- HTML


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:g}{unit}"


def render(data: dict[str, Any]) -> str:
    k, period = data["kpis"], data["period"]
    since = period.since.astimezone(LOCAL_TZ)
    until = period.until.astimezone(LOCAL_TZ)
    categories = sorted(k["by_category"].items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    names = data["categories"]
    worst = data["worst_grids"]
    cards = [
        ("按期结案率 On-time closure", _pct(k["on_time_rate"])),
        ("返工率 Rework", _pct(k["rework_rate"])),
        ("满意率 Satisfaction", _pct(k["satisfaction_rate"])),
        ("平均受理 Mean time to accept", _num(k["mean_accept_minutes"], " min")),
        ("平均办结 Mean time to resolve", _num(k["mean_resolve_minutes"], " min")),
        ("上报 / 结案 Reports / closed", f"{k['reports']} / {k['closed']}"),
    ]
    e = html.escape
    tier_rows = "".join(
        f"<tr><td>{TIER_ZH[t]} {t}</td><td>{v['reached']}</td><td>{v['escalated']}</td><td>{_pct(v['rate'])}</td></tr>"
        for t, v in k["escalation_by_tier"].items()
    )
    category_rows = "".join(
        f"<tr><td>{e(names.get(c, c))}</td><td>{c}</td><td>{n}</td></tr>" for c, n in categories
    )
    grid_rows = "".join(
        f"<tr><td>{e(g['name'] or g['grid'])}</td><td>{g['grid']}</td><td>{g['reports']}</td>"
        f"<td>{g['timed_out']}</td><td>{_pct(g['timeout_rate'])}</td><td>{_pct(g['on_time_rate'])}</td></tr>"
        for g in worst
    )
    charts = [
        chart_daily(data["daily"]),
        chart_tiers(k["escalation_by_tier"]),
        chart_bars(
            [names.get(c, c) for c, _ in categories],
            [n for _, n in categories],
            "事件类型 Top categories",
            "#2980b9",
        ),
        chart_bars(
            [g["name"] or g["grid"] for g in worst] or ["—"],
            [(g["timeout_rate"] or 0) * 100 for g in worst] or [0],
            "超时率最高的网格 Grids by share of cases timed out (%)",
            "#8e44ad",
        ),
        chart_lights(data["open"]["by_light"]),
    ]
    images = "".join(
        f'<img alt="chart {i + 1}" src="data:image/png;base64,{png}">' for i, png in enumerate(charts)
    )
    card_html = "".join(
        f'<div class="card"><div class="v">{v}</div><div class="k">{e(n)}</div></div>' for n, v in cards
    )
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>督查周报 Weekly supervisor report — {e(data["jurisdiction_name"])}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2rem; color: #222; }}
.cards {{ display: flex; flex-wrap: wrap; gap: .8rem; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; min-width: 11rem; }}
.card .v {{ font-size: 1.6rem; font-weight: bold; }} .card .k {{ color: #666; font-size: .85rem; }}
table {{ border-collapse: collapse; margin: .8rem 0; }} td, th {{ border: 1px solid #ddd; padding: .25rem .6rem; }}
img {{ max-width: 100%; margin: .6rem .6rem 0 0; vertical-align: top; }}
</style></head><body>
<h1>督查周报 Weekly supervisor report</h1>
<p>{e(data["jurisdiction_name"])} {e(data["jurisdiction"] or "")} ·
{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} (Asia/Shanghai)</p>
<div class="cards">{card_html}</div>
<h2>图表 Charts</h2>{images}
<h2>各层级升级率 Escalation rate by tier</h2>
<table><tr><th>tier</th><th>reached</th><th>escalated</th><th>rate</th></tr>{tier_rows}</table>
<h2>事件类型 Top categories</h2>
<table><tr><th>类型</th><th>code</th><th>reports</th></tr>{category_rows}</table>
<h2>超时率最高的网格 Worst grids</h2>
<table><tr><th>网格</th><th>code</th><th>reports</th><th>timed out</th><th>timeout rate</th><th>on-time closure</th></tr>{grid_rows}</table>
<p style="color:#888">KPI definitions: dispatch/stats.py (the same as GET /api/v1/stats).</p>
</body></html>
"""


def write_report(
    container: Container, out: Path, jurisdiction: str | None = None, week_ending: datetime | None = None
) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(gather(container, jurisdiction, week_ending)), encoding="utf-8")
    return out
