"""Duty rosters and working calendars over HTTP (the real app in-process, on a real database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from dispatch.bootstrap import Container
from tests.conftest import Demo


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container)) as c:
        yield c


def login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": "demo1234"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_who_is_on_duty_follows_the_rotation_and_overrides(client: TestClient, demo: Demo) -> None:
    community = demo.grid[:12]
    me = login(client, "community")
    day = client.get(
        f"/api/v1/duty/{community}", params={"at": "2026-11-30T10:00:00+08:00"}, headers=me
    ).json()
    night = client.get(
        f"/api/v1/duty/{community}", params={"at": "2026-11-30T21:00:00+08:00"}, headers=me
    ).json()
    assert (day["on_duty"], night["on_duty"]) == ("community", "community_b")
    r = client.post(
        f"/api/v1/duty/{community}/overrides",
        json={
            "start": "2026-11-30T20:00:00+08:00",
            "end": "2026-12-01T08:00:00+08:00",
            "member": "community",
        },
        headers=me,
    )
    assert r.status_code == 201, r.text
    assert r.json()["on_duty"] == "community"
    again = client.get(
        f"/api/v1/duty/{community}", params={"at": "2026-11-30T21:00:00+08:00"}, headers=me
    ).json()
    assert again["on_duty"] == "community"


def test_roster_changes_are_checked(client: TestClient, demo: Demo) -> None:
    community = demo.grid[:12]
    roster = {"members": ["community"], "shift_hours": 24, "anchor": "2026-01-01T08:00:00+08:00"}
    assert (
        client.put(f"/api/v1/duty/{community}", json=roster, headers=login(client, "grid")).status_code == 403
    )
    assert (
        client.put(
            f"/api/v1/duty/{community}",
            json={**roster, "anchor": "2026-01-01T08:00:00"},
            headers=login(client, "dispatcher"),
        ).status_code
        == 422
    )
    assert (
        client.put(f"/api/v1/duty/{demo.grid}", json=roster, headers=login(client, "dispatcher")).status_code
        == 422
    )
    bad = {"start": "2026-12-01T08:00:00+08:00", "end": "2026-11-30T08:00:00+08:00"}
    assert (
        client.post(
            f"/api/v1/duty/{community}/overrides", json=bad, headers=login(client, "community")
        ).status_code
        == 422
    )
    ok = client.put(
        f"/api/v1/duty/{community}",
        json={**roster, "window": ["08:00", "20:00"]},
        headers=login(client, "dispatcher"),
    )
    assert ok.status_code == 200 and ok.json()["roster"]["window"] == ["08:00", "20:00"]
    late = client.get(
        f"/api/v1/duty/{community}",
        params={"at": "2026-11-30T22:00:00+08:00"},
        headers=login(client, "community"),
    )
    assert late.json()["on_duty"] is None


def test_county_calendar_is_set_by_an_admin_and_used_for_limits(
    client: TestClient, container: Container
) -> None:
    body = {
        "periods": [["09:00", "12:00"], ["13:30", "18:00"]],
        "extra_closed": ["2026-12-01"],
        "extra_open": [],
    }
    assert (
        client.put("/api/v1/calendars/360102", json=body, headers=login(client, "dispatcher")).status_code
        == 403
    )
    r = client.put("/api/v1/calendars/360102", json=body, headers=login(client, "admin"))
    assert r.status_code == 200 and r.json()["minutes_per_day"] == 450
    overlapping = {"periods": [["09:00", "12:00"], ["11:00", "18:00"]]}
    assert (
        client.put("/api/v1/calendars/360102", json=overlapping, headers=login(client, "admin")).status_code
        == 422
    )
    assert container.service.calendars.calendar("360102").minutes_per_day == 450
