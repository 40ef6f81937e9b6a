"""A third-party Open311 client from PyPI (`georeport`, written for US cities' GeoReport v2 endpoints) lists
services and reads requests from a real `griddispatch serve`, in JSON and in XML, unchanged."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from georeport import GeoReport

from dispatch import models as m
from dispatch.bootstrap import build
from dispatch.clock import FakeClock
from dispatch.open311_keys import add_key
from dispatch.settings import Settings
from tests.server import Api, ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_template: Path) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("open311-e2e")
    shutil.copy(demo_template, tmp / "griddispatch.sqlite3")
    c = build(Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'griddispatch.sqlite3'}"), FakeClock())
    key = add_key(c.db, "hotline", "360102", c.clock.now())
    with c.db.read() as s:
        grid_code = s.get(m.User, "grid").unit_code
    p = c.tree.units[grid_code].geometry.representative_point()
    c.db.dispose()
    proc = ServerProcess(tmp, database_url=f"sqlite:///{tmp / 'griddispatch.sqlite3'}").start()
    try:
        yield {"url": proc.url, "key": key, "lon": p.x, "lat": p.y, "grid": grid_code}
    finally:
        proc.stop()


def test_a_pypi_open311_client_lists_services_and_reads_requests(served: dict[str, Any]) -> None:
    root = served["url"] + "/open311/v2"
    # Filed two ways: through our own API (a hotline operator) and through Open311 POST with the api key.
    api = Api(served["url"])
    own = api.report(
        "dispatcher",
        {"lon": served["lon"], "lat": served["lat"], "category": "sanitation", "description": "楼道垃圾"},
    ).json()["id"]
    posted = httpx.post(
        f"{root}/requests.json",
        data={
            "api_key": served["key"],
            "service_code": "municipal",
            "lat": served["lat"],
            "long": served["lon"],
            "description": "路灯不亮",
        },
    )
    assert posted.status_code == 201, posted.text
    rid = posted.json()[0]["service_request_id"]

    for fmt in ("json", "xml"):
        client = GeoReport(root, jurisdiction="360102", output_format=fmt)
        services = client.get_service_list()
        codes = [s["service_code"] for s in services]
        assert "sanitation" in codes and "municipal" in codes and len(codes) == 11
        assert {s["service_name"] for s in services} >= {"环境卫生", "市政设施"}

        definition = client.get_service_definition("sanitation")
        assert definition["service_code"] == "sanitation"

        requests = client.get_service_requests()
        assert [r["service_request_id"] for r in requests] == [rid, own]
        filtered = client.get_service_requests(service_code="municipal", status="open")
        # xmltodict hands back a lone element as a dict rather than a one-item list.
        filtered = filtered if isinstance(filtered, list) else [filtered]
        assert [r["service_request_id"] for r in filtered] == [rid]
        one = client.get_service_request(rid)
        assert one["service_request_id"] == rid
        assert one["status"] == "open" and one["service_code"] == "municipal"
        assert one["description"] == "路灯不亮"
        assert one["agency_responsible"]  # the grid now handling it
        assert float(one["lat"]) == pytest.approx(served["lat"])
