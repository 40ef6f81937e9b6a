"""schemathesis over the whole OpenAPI schema against a real server, with a valid admin token: no request it
generates may cause a server error, and responses must match the schema (issue 6)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api.app import create_app
from tests.server import Api, ServerProcess

pytestmark = pytest.mark.e2e
schema = schemathesis.openapi.from_dict(create_app().openapi())
CASES: list[str] = []


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    shutil.copy(demo_template, tmp / "griddispatch.sqlite3")
    # Generated webhook URLs could name any host: deliveries may go to loopback only.
    proc = ServerProcess(tmp, rate_per_token=0, rate_per_ip=0, webhook_allowed_hosts="127.0.0.1").start()
    api = Api(proc.url)
    try:
        yield proc.url, {"Authorization": f"Bearer {api.token('admin')}"}
    finally:
        proc.stop()
        print(f"\nschemathesis: {len(CASES)} generated requests")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(
    case: schemathesis.Case, target: tuple[str, dict[str, str]]
) -> None:
    url, headers = target
    CASES.append(f"{case.method} {case.path}")
    case.call_and_validate(
        base_url=url,
        headers=headers,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
