"""What the pages stand on, without a browser: the pages and their files are served by the app (nothing from
elsewhere), the grid GeoJSON, the KPIs, the overdue list and the escalation log's CSV export and filters."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.domain import Command
from tests.conftest import Demo, advance

STATIC = Path(__file__).resolve().parent.parent / "api" / "static"
# The only absolute URL our own files may contain: the SVG namespace, which is a name, never fetched.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container)) as c:
        yield c


def login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": "demo1234"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.parametrize(
    ("path", "title"), [("/", "县级指挥中心"), ("/supervisor", "督查台"), ("/report", "事件上报")]
)
def test_pages_and_everything_they_load_come_from_the_app(client: TestClient, path: str, title: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert title in r.text and 'lang="zh-CN"' in r.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(ref.startswith(("/", "data:")) for ref in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            assert client.get(ref).status_code == 200, ref


def test_our_scripts_and_styles_name_no_other_host() -> None:
    own = [p for p in STATIC.rglob("*") if p.suffix in (".js", ".css", ".html") and "vendor" not in p.parts]
    assert len(own) >= 9
    for path in own:
        urls = set(re.findall(r"(?:https?|wss?)://[^\s\"'`)]+", path.read_text(encoding="utf-8")))
        assert urls <= ALLOWED_URLS, (path.name, urls)
    css = (STATIC / "common.css").read_text(encoding="utf-8")
    assert all(font in css for font in ("Microsoft YaHei", "PingFang SC", "Noto Sans CJK SC"))
    assert (STATIC / "vendor" / "leaflet" / "LICENSE").exists()


def test_static_files_stay_inside_the_static_folder(client: TestClient) -> None:
    assert client.get("/static/common.js").status_code == 200
    for bad in ("/static/../pages.py", "/static/..%2Fpages.py", "/static/nope.js", "/static/vendor"):
        assert client.get(bad).status_code == 404, bad


def test_who_am_i_and_reference_data(client: TestClient, demo: Demo) -> None:
    assert client.get("/api/v1/pages/me").status_code == 401
    me = client.get("/api/v1/pages/me", headers=login(client, "grid")).json()
    assert me["role"] == "grid_worker" and me["unit"]["code"] == demo.grid and me["county"] == "360102"
    cfg = client.get("/api/v1/pages/config", headers=login(client, "grid")).json()
    assert cfg["categories"]["sanitation"] == "环境卫生" and cfg["photo"]["max_count"] == 9
    assert cfg["departments"]["360102.urban"] == "城管局" and cfg["tiles"] == {"url": "", "attribution": ""}
    assert {u["level"] for u in cfg["units"]} == {"county", "township", "community", "grid"}


def _close(container: Container, demo: Demo, iid: str, handler: str) -> None:
    for user, action in ((handler, "accept"), (handler, "resolve"), ("grid", "verify_pass")):
        container.service.act(iid, Command(action), demo.actor(user))


def test_kpis_overdue_list_and_csv(
    client: TestClient, container: Container, demo: Demo, clock: FakeClock
) -> None:
    # One case closed in time; one that ran out of time (ack_timeout) before it closed; one left to run late.
    on_time = container.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    late = container.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    container.service.act(on_time, Command("accept"), demo.actor("grid"))
    assert advance(container, clock, minutes=31) >= 1  # `late` was not accepted in 30 minutes: escalated
    container.service.act(on_time, Command("resolve"), demo.actor("grid"))
    container.service.act(on_time, Command("verify_pass"), demo.actor("grid"))
    _close(container, demo, late, "community")
    container.service.act(late, Command("rate", rating=5), demo.actor("supervisor"))
    still_open = container.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    clock.advance(timedelta(minutes=45))  # past its 30-minute ack limit; not fired, so still at grid tier

    s = client.get("/api/v1/stats", headers=login(client, "supervisor")).json()
    k = s["period_kpis"]
    assert s["today"]["reports"] == 3 and k["reports"] == 3 and k["closed"] == 2
    assert k["closed_on_time"] == 1 and k["on_time_rate"] == 0.5
    assert k["rework_rate"] == 0 and k["satisfaction_rate"] == 1.0
    assert k["escalation_by_tier"]["grid"] == {"reached": 3, "escalated": 1, "rate": round(1 / 3, 4)}
    assert s["open"]["total"] == 1 and s["today"]["escalations"] >= 1
    assert len(s["daily"]) == 7 and s["daily"][-1]["reports"] == 3

    overdue = client.get("/api/v1/stats/overdue", headers=login(client, "supervisor")).json()["items"]
    assert [c["id"] for c in overdue] == [still_open]
    assert 14 * 60 <= overdue[0]["late_seconds"] <= 16 * 60 and overdue[0]["clock"] == "ack"
    assert client.get("/api/v1/stats?jurisdiction=360102", headers=login(client, "grid")).status_code == 403

    h = login(client, "supervisor")
    listed = client.get("/api/v1/escalations", headers=h).json()["items"]
    r = client.get("/api/v1/escalations?format=csv", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    header = [h.split()[-1] for h in rows[0]]
    assert [dict(zip(header, row, strict=True))["incident_id"] for row in rows[1:]] == [
        e["incident_id"] for e in listed
    ]
    reasons = [dict(zip(header, row, strict=True))["reason"] for row in rows[1:]]
    assert "ack_timeout" in reasons

    only = client.get("/api/v1/escalations?format=csv&reason=ack_timeout", headers=h).content.decode()
    assert {
        row[header.index("reason")] for row in list(csv.reader(io.StringIO(only.lstrip("\ufeff"))))[1:]
    } == {"ack_timeout"}
    # Department filter: no case was dispatched to the housing bureau.
    none = client.get("/api/v1/escalations?department=360102.housing", headers=h).json()
    assert none["items"] == []
